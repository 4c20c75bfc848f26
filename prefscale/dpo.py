"""One DPO iteration with TRL's `DPOTrainer` (+ PEFT LoRA), merged and saved as a model folder."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.compute import Compute
from prefscale.policy import load_policy, save_policy
from prefscale.recipe import DPOSettings

_STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


@dataclass
class DPOReport:
    steps: int
    seconds: float
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def _to_records(pairs: pl.DataFrame) -> list[dict[str, Any]]:
    return pairs.select("prompt", "chosen", "rejected").to_dicts()


def train_dpo(
    policy_dir: Path,
    pairs: pl.DataFrame,
    settings: DPOSettings,
    out_dir: Path,
    work_dir: Path,
    compute: Compute,
    seed: int,
) -> DPOReport:
    """Train the policy in `policy_dir` on `pairs`; write the merged model to `out_dir`.

    With LoRA and no explicit reference, the reference is the same weights with the adapter disabled, i.e. the
    previous iteration's policy (as in Snorkel's and SPPO's loops).
    """
    from datasets import Dataset
    from peft import LoraConfig
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    if pairs.height == 0:
        raise ValueError("no preference pairs to train on")
    for name in ("transformers", "trl", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    model, tokenizer = load_policy(policy_dir, compute)
    tokenizer.padding_side = "right"
    prompt_texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in pairs["prompt"].to_list()
    ]
    longest = max(len(ids) for ids in tokenizer(prompt_texts, add_special_tokens=False)["input_ids"])
    if longest >= settings.max_length:
        raise ValueError(
            f"dpo.max_length={settings.max_length} is not longer than the longest prompt ({longest} tokens)"
        )
    args = DPOConfig(
        output_dir=str(work_dir),
        loss_type=[settings.loss_type],
        beta=settings.beta,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        num_train_epochs=settings.num_train_epochs,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_length=settings.max_length,
        gradient_checkpointing=settings.gradient_checkpointing,
        bf16=compute.bf16,
        use_cpu=compute.device == "cpu",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    peft_config = None
    if settings.lora is not None:
        targets = settings.lora.target_modules
        peft_config = LoraConfig(
            r=settings.lora.r,
            lora_alpha=settings.lora.alpha,
            lora_dropout=settings.lora.dropout,
            target_modules=targets if isinstance(targets, str) else list(targets),
            task_type="CAUSAL_LM",
        )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(_to_records(pairs)),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)  # metrics go to the report (and MLflow), not stdout
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trained = trainer.model
    if peft_config is not None:
        trained = trained.merge_and_unload()
    trained.eval()
    tokenizer.padding_side = "left"
    save_policy(trained, tokenizer, out_dir)
    history = [
        {k: float(v) for k, v in row.items() if k in (*_STEP_KEYS, "step", "epoch", "learning_rate")}
        for row in trainer.state.log_history
        if "loss" in row
    ]
    final = {k: sum(h.get(k, 0.0) for h in history[-5:]) / max(1, len(history[-5:])) for k in _STEP_KEYS}
    return DPOReport(steps=int(trainer.state.global_step), seconds=seconds, final=final, history=history)
