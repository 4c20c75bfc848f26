"""One DPO iteration with TRL's `DPOTrainer` (+ PEFT LoRA), merged and saved as a model folder.

Framework-free: no Dagster here. `prefscale train-dpo` (`prefscale.commands.train`) runs `train_dpo` in its own
process (alone, or one per rank under `accelerate launch`) and the `dpo_checkpoint` asset launches that command
through Dagster Pipes.

Resumable: trainer checkpoints (`checkpoint-<step>/`, every `settings.save_steps`) go to `work_dir`, which the
caller keeps per partition and per fingerprint of the inputs and settings (`dpo_fingerprint`). Training that
finds a complete checkpoint there continues from it (`trainer.train(resume_from_checkpoint=...)`): the
optimizer, scheduler, RNG and data-order state come back with the weights, so the final model is the one an
uninterrupted run makes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.compute import Compute
from prefscale.config.training import DPOSettings
from prefscale.policy.io import load_policy, save_policy
from prefscale.progress import Progress

_STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
ADAPTER_DIR = "adapter"  # the LoRA adapter, beside the merged model, in a published checkpoint
REPORT_FILE = "report.json"  # the training report `prefscale train-dpo` leaves in its work dir
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# Bump when a change to the training code would make an old trainer checkpoint unsafe to resume from.
TRAINING_CODE_VERSION = "1"


@dataclass
class DPOReport:
    steps: int  # the trainer's global step at the end (all of training, resumed or not)
    seconds: float  # wall time of `trainer.train` in this process
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int = 0  # 0: started from scratch
    world_size: int = 1
    distributed_type: str = "NO"  # accelerate's: NO, MULTI_CPU (gloo), MULTI_GPU, DEEPSPEED, FSDP
    trainer_args: dict[str, Any] = field(default_factory=dict)  # the effective DPOConfig (JSON-safe)

    @property
    def steps_run(self) -> int:
        """Optimizer steps this process ran (fewer than `steps` after a resume)."""
        return self.steps - self.resumed_from_step

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_run": self.steps_run}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DPOReport:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> DPOReport:
        return cls.from_dict(json.loads(path.read_text()))


def _to_records(pairs: pl.DataFrame) -> list[dict[str, Any]]:
    return pairs.select("prompt", "chosen", "rejected").to_dicts()


def longest_prompt_tokens(tokenizer: Any, pairs: pl.DataFrame) -> int:
    """Tokens of the longest chat-formatted prompt (with the generation prompt)."""
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in pairs["prompt"].to_list()
    ]
    return max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def check_pairs(tokenizer: Any, pairs: pl.DataFrame, settings: DPOSettings) -> int:
    """Fail fast (before any model is trained) on pairs the settings cannot train on; the longest prompt."""
    if pairs.height == 0:
        raise ValueError("no preference pairs to train on")
    longest = longest_prompt_tokens(tokenizer, pairs)
    if longest >= settings.max_length:
        raise ValueError(
            f"dpo.max_length={settings.max_length} is not longer than the longest prompt ({longest} tokens)"
        )
    return longest


def check_pairs_for_policy(policy_dir: Path, pairs: pl.DataFrame, settings: DPOSettings) -> int:
    """`check_pairs` with the policy's tokenizer only (no model load): what the asset checks before launching."""
    from transformers import AutoTokenizer

    return check_pairs(AutoTokenizer.from_pretrained(str(policy_dir)), pairs, settings)


def dpo_fingerprint(
    *,
    policy_sha256: str,
    pairs_sha256: str,
    settings: Any,
    seed: int,
    compute: Compute,
    reference_sha256: str = "",
    world_size: int = 1,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """sha256 of everything that decides the trained weights: a trainer checkpoint is resumable only under it.

    `settings` is any pydantic settings model (`dpo` or `online`); `extra` adds what else decides them (an
    online method: the method, its reward and the labeling functions)."""
    doc = {
        "code": TRAINING_CODE_VERSION,
        "policy": policy_sha256,
        "pairs": pairs_sha256,
        "reference": reference_sha256,
        "settings": settings.model_dump(mode="json"),
        "seed": seed,
        "device": compute.device.split(":")[0],
        "dtype": str(compute.dtype),
        "world_size": world_size,
        **({"extra": dict(extra)} if extra else {}),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def work_dir_for(home: Path, partition: str, fingerprint: str, asset: str = "dpo_checkpoint") -> Path:
    """`<home>/work/<asset>/<partition>/<fingerprint[:16]>`: survives a crash, unlike the publish temp dir."""
    return Path(home) / "work" / asset / partition / fingerprint[:16]


def checkpoint_step(path: Path) -> int:
    m = _CHECKPOINT_RE.match(path.name)
    return int(m.group(1)) if m else -1


def last_complete_checkpoint(work_dir: Path) -> Path | None:
    """The newest `checkpoint-<step>` whose trainer state was written (the trainer writes it last).

    A process killed while saving leaves a folder without a readable `trainer_state.json`; it is skipped.
    """
    if not Path(work_dir).is_dir():
        return None
    found = sorted(
        (p for p in Path(work_dir).iterdir() if p.is_dir() and checkpoint_step(p) >= 0),
        key=checkpoint_step,
        reverse=True,
    )
    for ckpt in found:
        try:
            state = json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if int(state.get("global_step", -1)) == checkpoint_step(ckpt):
            return ckpt
    return None


def trainer_plumbing(
    work_dir: Path, compute: Compute, seed: int, save_steps: int | None, save_total_limit: int | None
) -> dict[str, Any]:
    """The TrainingArguments every trainer here shares: device and dtype, a log line per step, resumable
    checkpoints every `save_steps` (None: none), no reporting, seeds, no progress bar, no dataloader workers."""
    saving = save_steps is not None
    return dict(
        output_dir=str(work_dir),
        bf16=compute.bf16,
        use_cpu=compute.device == "cpu",
        logging_steps=1,
        save_strategy="steps" if saving else "no",
        save_steps=save_steps if saving else 500,
        save_total_limit=save_total_limit if saving else None,
        save_only_model=False,  # optimizer, scheduler and RNG state too: needed to resume exactly
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_dpo_config(settings: DPOSettings, work_dir: Path, compute: Compute, seed: int) -> Any:
    """TRL's `DPOConfig` for `settings`: one recipe key per DPOConfig field, plus the fixed plumbing."""
    from trl import DPOConfig

    return DPOConfig(
        **trainer_plumbing(work_dir, compute, seed, settings.save_steps, settings.save_total_limit),
        loss_type=[settings.loss_type, *(["sft"] if settings.sft_weight else [])],
        loss_weights=[1.0, settings.sft_weight] if settings.sft_weight else None,
        beta=settings.beta,
        label_smoothing=settings.label_smoothing,
        ld_alpha=settings.ld_alpha,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_length=settings.max_length,
        gradient_checkpointing=settings.gradient_checkpointing,
        precompute_ref_log_probs=settings.precompute_ref_log_probs,
    )


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str))


def _save_merged_from_adapter(policy_dir: Path, adapter_dir: Path, out_dir: Path, compute: Compute) -> None:
    """Merge a saved adapter into a fresh copy of the starting policy (sharded trainers: DeepSpeed, FSDP)."""
    from peft import PeftModel

    base, tokenizer = load_policy(policy_dir, Compute("cpu", compute.dtype))
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.eval()
    save_policy(merged, tokenizer, out_dir)


def peft_lora_config(lora: Any) -> Any:
    """PEFT's `LoraConfig` for a recipe's `lora` settings (None: full fine-tuning, no adapter)."""
    if lora is None:
        return None
    from peft import LoraConfig

    targets = lora.target_modules
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def save_trained(
    trainer: Any, tokenizer: Any, policy_dir: Path, out_dir: Path, compute: Compute, *, lora: bool
) -> None:
    """Write a finished trainer's policy to `out_dir`: merged (the adapter beside it in `adapter/`) with LoRA.

    Sharded trainers (DeepSpeed, FSDP) gather the weights on every rank and the main process writes them.
    """
    acc = trainer.accelerator
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    tokenizer.padding_side = "left"
    if sharded:
        target = out_dir / ADAPTER_DIR if lora else out_dir
        trainer.save_model(str(target))
        if acc.is_main_process:
            if lora:
                _save_merged_from_adapter(policy_dir, target, out_dir, compute)
            else:
                tokenizer.save_pretrained(out_dir)
    elif acc.is_main_process:
        trained = acc.unwrap_model(trainer.model)
        if lora:
            trained.save_pretrained(str(out_dir / ADAPTER_DIR), safe_serialization=True)
            trained = trained.merge_and_unload()
        trained.eval()
        save_policy(trained, tokenizer, out_dir)
    acc.wait_for_everyone()


def train_resumably(
    trainer: Any, work_dir: Path, resume: bool, on_resume: Callable[[Path], None] | None = None
) -> tuple[int, float]:
    """`trainer.train()`, from the last complete trainer checkpoint in `work_dir` when `resume` finds one;
    (the step it resumed from, 0 for none; the seconds `train` took)."""
    checkpoint = last_complete_checkpoint(work_dir) if resume else None
    if checkpoint is not None and on_resume is not None:
        on_resume(checkpoint)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    return (checkpoint_step(checkpoint) if checkpoint is not None else 0), time.perf_counter() - t0


def training_report(
    trainer: Any,
    args: Any,
    history: list[dict[str, float]],
    keys: Sequence[str],
    resumed_from: int,
    seconds: float,
) -> DPOReport:
    """The report of a finished trainer: `final` is each of `keys` averaged over the last 5 logged steps."""
    import torch

    acc = trainer.accelerator
    last = history[-5:]
    final = {k: sum(h.get(k, 0.0) for h in last) / max(1, len(last)) for k in keys}
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return DPOReport(
        steps=int(trainer.state.global_step),
        seconds=seconds,
        final=final,
        history=history,
        resumed_from_step=resumed_from,
        world_size=int(acc.num_processes),
        distributed_type=str(getattr(acc.distributed_type, "value", acc.distributed_type)),
        trainer_args=_jsonable(args.to_dict()),
    )


def progress_callback(label: str = "DPO training") -> Any:
    """A TRL/transformers `TrainerCallback` logging step / max_steps, rate, ETA and the last loss and margin (DPO)
    or reward and KL (GRPO, RLOO) every tenth of the run (`prefscale.progress`), on the main process only."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        progress: Progress | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:  # a resumed run starts at its checkpoint's step
                self.progress = Progress(label, state.max_steps, "steps", start=state.global_step)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if self.progress is not None and logs and "loss" in logs:
                extra = "".join(
                    f", {name}={logs[key]:.4g}"
                    for key, name in (("rewards/margins", "margin"), ("reward", "reward"), ("kl", "kl"))
                    if key in logs
                )
                self.progress.update(state.global_step, f"loss={logs['loss']:.4g}{extra}")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None:
                self.progress.update(state.global_step)

    return ProgressCallback()


def train_dpo(
    policy_dir: Path,
    pairs: pl.DataFrame,
    settings: DPOSettings,
    out_dir: Path,
    work_dir: Path,
    compute: Compute,
    seed: int,
    *,
    reference_dir: Path | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    on_resume: Callable[[Path], None] | None = None,
) -> DPOReport:
    """Train the policy in `policy_dir` on `pairs`; write the merged model (and `adapter/` with LoRA) to `out_dir`.

    The reference is the starting policy itself (`reference_dir` None or equal to `policy_dir`): with LoRA the
    same weights with the adapter disabled, without LoRA a frozen copy — the previous iteration's policy, as in
    Snorkel's and SPPO's loops. Another `reference_dir` (e.g. the fixed base) is loaded as a separate model.

    Trainer checkpoints go to `work_dir`; with `resume`, a complete one found there is resumed from.
    """
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOTrainer

    if pairs.height == 0:
        raise ValueError("no preference pairs to train on")
    for name in ("transformers", "trl", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    check_pairs_for_policy(Path(policy_dir), pairs, settings)  # before any model is loaded
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    # The config exists before the models load: DeepSpeed ZeRO-3 partitions them at load time through it.
    args = build_dpo_config(settings, work_dir, compute, seed)
    model, tokenizer = load_policy(policy_dir, compute)
    tokenizer.padding_side = "right"
    ref_model = None
    if reference_dir is not None and Path(reference_dir).resolve() != Path(policy_dir).resolve():
        ref_model, _ = load_policy(reference_dir, compute)
    peft_config = peft_lora_config(settings.lora)
    # The LoRA adapter is initialised in the trainer's constructor, before the Trainer seeds itself: seed here
    # so the initial adapter depends on `seed` only, not on whatever ran earlier in this process.
    set_seed(seed)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(_to_records(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress_callback(), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to the report (and MLflow), not stdout
    resumed_from, seconds = train_resumably(
        trainer, work_dir, resume and settings.save_steps is not None, on_resume
    )

    save_trained(trainer, tokenizer, Path(policy_dir), out_dir, compute, lora=peft_config is not None)
    history = [
        {k: float(v) for k, v in row.items() if k in (*_STEP_KEYS, "step", "epoch", "learning_rate")}
        for row in trainer.state.log_history
        if "loss" in row
    ]
    del ref_model
    return training_report(trainer, args, history, _STEP_KEYS, resumed_from, seconds)
