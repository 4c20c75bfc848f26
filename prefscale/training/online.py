"""One online-RL iteration with TRL's `GRPOTrainer` or `RLOOTrainer` (+ PEFT LoRA), merged and saved as a model folder.

The policy samples `num_generations` completions per prompt at every step; the recipe's reward
(`prefscale.rewards.online.OnlineReward`: the labeling functions and the iteration's fitted label model, the
weak-supervision reward model, or their ensemble) scores them; the trainer moves the policy toward the
completions that score above their group, with a KL penalty to the starting policy. `prefscale train-online`
(`prefscale.commands.train_online`) runs `train_online` in its own process, which the `dpo_checkpoint` asset
launches through Dagster Pipes for `training.method` grpo or rloo.

Resumable like DPO: trainer checkpoints in `work_dir` (per partition and fingerprint of the inputs) are resumed
from when the run is materialized again after a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.compute import Compute
from prefscale.config.training import OnlineSettings
from prefscale.policy.chat import prompt_messages
from prefscale.policy.io import load_policy
from prefscale.rewards.online import OnlineReward
from prefscale.training.dpo import (
    DPOReport,
    peft_lora_config,
    progress_callback,
    save_trained,
    train_resumably,
    trainer_plumbing,
    training_report,
)

ONLINE_METHODS = ("grpo", "rloo")
# What each logged step keeps: TRL's own metrics, and the completion health the reward function records.
ONLINE_STEP_KEYS = (
    "loss",
    "reward",
    "reward_std",
    "kl",
    "entropy",
    "completions/mean_length",
    "completions/clipped_ratio",
    "completions/repeated_line_share",
    "completions/empty_share",
)
_REWARD_STATS = {  # OnlineReward.history's names -> the step keys above (RLOO has no log_metric hook)
    "repeated_line_share": "completions/repeated_line_share",
    "empty_share": "completions/empty_share",
}


def build_online_config(
    method: str, settings: OnlineSettings, work_dir: Path, compute: Compute, seed: int
) -> Any:
    """TRL's `GRPOConfig` or `RLOOConfig` for `settings`: one recipe key per field, plus the fixed plumbing."""
    if method not in ONLINE_METHODS:
        raise ValueError(f"unknown online method {method!r}; known: {', '.join(ONLINE_METHODS)}")
    from trl import GRPOConfig, RLOOConfig

    common: dict[str, Any] = dict(
        **trainer_plumbing(work_dir, compute, seed, settings.save_steps, settings.save_total_limit),
        beta=settings.beta,
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler_type,
        warmup_steps=settings.warmup_ratio,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        top_p=settings.top_p,
        epsilon=settings.epsilon,
        mask_truncated_completions=settings.mask_truncated_completions,
        gradient_checkpointing=False,
    )
    if method == "grpo":
        return GRPOConfig(**common, scale_rewards=settings.scale_rewards, loss_type=settings.loss_type)
    return RLOOConfig(**common, normalize_advantages=settings.normalize_advantages)


def prompt_records(prompts: pl.DataFrame, system: str | None = None) -> list[dict[str, Any]]:
    """The trainer's dataset: each prompt as chat messages (after the recipe's system message), with the
    prompt_id and task_type the reward's labeling functions read."""
    missing = {"prompt_id", "prompt"} - set(prompts.columns)
    if missing:
        raise ValueError(f"the prompts lack column(s) {sorted(missing)}")
    if prompts.height == 0:
        raise ValueError("no prompts to train on")
    task = prompts["task_type"] if "task_type" in prompts.columns else pl.Series([None] * prompts.height)
    return [
        {"prompt": prompt_messages(p, system), "prompt_id": pid, "task_type": t}
        for pid, p, t in zip(prompts["prompt_id"], prompts["prompt"], task, strict=True)
    ]


def step_history(
    log_history: Sequence[dict[str, Any]], reward_history: Sequence[dict[str, float]]
) -> list[dict]:
    """One row per logged step: TRL's metrics, completed from the reward function's own records."""
    by_step = {int(r["step"]): r for r in reward_history}
    rows = []
    for row in log_history:
        if "loss" not in row or "reward" not in row:
            continue
        out = {
            k: float(v) for k, v in row.items() if k in (*ONLINE_STEP_KEYS, "step", "epoch", "learning_rate")
        }
        step = int(row.get("step", 0))
        for src, key in _REWARD_STATS.items():
            if key not in out and step in by_step:
                out[key] = float(by_step[step][src])
        rows.append(out)
    return rows


def train_online(
    method: str,
    policy_dir: Path,
    prompts: pl.DataFrame,
    reward: OnlineReward,
    settings: OnlineSettings,
    out_dir: Path,
    work_dir: Path,
    compute: Compute,
    seed: int,
    *,
    system: str | None = None,
    resume: bool = True,
    callbacks: Sequence[Any] = (),
    on_resume: Callable[[Path], None] | None = None,
) -> DPOReport:
    """Train the policy in `policy_dir` online on `prompts` against `reward`; write the merged model (and
    `adapter/` with LoRA) to `out_dir`. The KL reference is the starting policy (with LoRA, the adapter
    disabled). Trainer checkpoints go to `work_dir`; with `resume`, a complete one found there is resumed from."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOTrainer, RLOOTrainer

    records = prompt_records(prompts, system)  # before any model is loaded
    for name in ("transformers", "trl", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    args = build_online_config(method, settings, work_dir, compute, seed)
    reward.max_completion_length = settings.max_completion_length
    model, tokenizer = load_policy(policy_dir, compute)
    tokenizer.padding_side = "left"
    peft_config = peft_lora_config(settings.lora)
    set_seed(seed)
    trainer_cls = GRPOTrainer if method == "grpo" else RLOOTrainer
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress_callback(f"{method.upper()} training"), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    resumed_from, seconds = train_resumably(
        trainer, work_dir, resume and settings.save_steps is not None, on_resume
    )
    save_trained(trainer, tokenizer, Path(policy_dir), out_dir, compute, lora=peft_config is not None)
    history = step_history(trainer.state.log_history, reward.history)
    return training_report(trainer, args, history, ONLINE_STEP_KEYS, resumed_from, seconds)
