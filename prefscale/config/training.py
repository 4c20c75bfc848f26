"""The recipe's `training`, `dpo` and `online` sections: the method, and its settings mapped one-to-one onto TRL's
`DPOConfig` / `GRPOConfig` / `RLOOConfig` and PEFT's `LoraConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from prefscale.config.base import _Strict


class LoraConfig(_Strict):
    """The LoRA adapter DPO trains (PEFT's `LoraConfig`, `task_type="CAUSAL_LM"`); merged into the checkpoint."""

    r: int = Field(
        default=16,
        ge=1,
        description="LoRA rank: the inner dimension of the low-rank update matrices (PEFT `r`)",
    )
    alpha: int = Field(
        default=32,
        ge=1,
        description="LoRA scaling: the update is multiplied by alpha / r (PEFT `lora_alpha`)",
    )
    dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="dropout probability on the LoRA layers' input (PEFT `lora_dropout`)",
    )
    target_modules: str | tuple[str, ...] = Field(
        default="all-linear",
        description="modules that get an adapter: `all-linear` (every linear layer but the output head), or a "
        "list of module names such as [q_proj, v_proj] (PEFT `target_modules`)",
    )


class DPOSettings(_Strict):
    """The recipe's `dpo` section, mapped one-to-one onto TRL's `DPOConfig` (and PEFT's `LoraConfig`).

    `lora: null` trains every weight. `reference` is the policy the KL term is measured against: `previous`
    (the policy this iteration starts from, as in SPPO and Snorkel's loop) or the fixed `base` policy.
    `save_steps` writes trainer checkpoints (null: none) that a crashed run resumes from; `num_processes` > 1
    or an `accelerate_config` file launches `prefscale train-dpo` through `accelerate launch`.
    """

    loss_type: Literal["sigmoid", "ipo", "robust", "hinge", "sppo_hard", "sigmoid_norm"] = Field(
        default="sigmoid",
        description="DPO loss (TRL `loss_type`): sigmoid (the DPO paper), ipo, robust (robust DPO, with "
        "label_smoothing), hinge (SLiC), sppo_hard (SPPO), sigmoid_norm (the length-normalised sigmoid loss)",
    )
    beta: float = Field(
        default=0.1,
        gt=0,
        description="controls the deviation from the reference policy: higher beta, less deviation; for ipo the "
        "regularization parameter tau (TRL `beta`)",
    )
    sft_weight: float = Field(
        default=0.0,
        ge=0,
        description="weight of an NLL term on the chosen responses added to the DPO loss (RPO, Pang et al. 2024: "
        'TRL `loss_type=[loss_type, "sft"]`, `loss_weights=[1, sft_weight]`); 0: plain DPO. It pulls a weak '
        "policy toward its best samples instead of only away from its worst",
    )
    ld_alpha: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="length desensitization (LD-DPO, Liu et al. 2024; TRL `ld_alpha`): each response's "
        "log-probability counts its tokens beyond the length it shares with the other response of its pair times "
        "this, in [0, 1], so the longer side cannot win on extra tokens alone; null or 1: plain DPO, 0: only the "
        "shared length counts",
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="robust: the probability that a preference label is flipped, in [0, 0.5); 0.1 is typical "
        "(TRL `label_smoothing`)",
    )
    learning_rate: float = Field(
        default=2e-3, gt=0, description="initial (peak) AdamW learning rate (TRL `learning_rate`)"
    )
    lr_scheduler_type: Literal[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "cosine_with_min_lr",
        "warmup_stable_decay",
    ] = Field(
        default="cosine",
        description="learning-rate schedule after warm-up (transformers `SchedulerType`; TRL `lr_scheduler_type`)",
    )
    warmup_ratio: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="share of the total optimizer steps spent warming the learning rate up linearly from 0 "
        "(passed as TRL `warmup_steps`, which reads a float < 1 as a ratio)",
    )
    num_train_epochs: float = Field(
        default=2.0,
        gt=0,
        description="passes over the iteration's pairs; a fraction stops part-way (TRL `num_train_epochs`)",
    )
    per_device_train_batch_size: int = Field(
        default=16,
        ge=1,
        description="pairs per device per forward pass (TRL `per_device_train_batch_size`)",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        description="forward passes accumulated per optimizer step: pairs per step = per_device_train_batch_size "
        "x processes x this (TRL `gradient_accumulation_steps`)",
    )
    max_length: int = Field(
        default=256,
        ge=16,
        description="tokens of prompt + response kept per sequence (TRL `max_length`, passed explicitly); must "
        "be longer than the longest prompt",
    )
    gradient_checkpointing: bool = Field(
        default=False,
        description="recompute activations in the backward pass: less memory, about 20% slower "
        "(TRL `gradient_checkpointing`)",
    )
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="compute the reference policy's log-probabilities for all pairs before training, so the "
        "reference model need not stay in memory (TRL `precompute_ref_log_probs`)",
    )
    reference: Literal["previous", "base"] = Field(
        default="previous",
        description="the reference policy of the KL term: previous (the policy this iteration starts from; with "
        "LoRA, the same weights with the adapter disabled) or base (the fixed base policy, loaded separately)",
    )
    save_steps: int | None = Field(
        default=10,
        ge=1,
        description="optimizer steps between trainer checkpoints that a crashed run resumes from; null: no "
        "checkpoints, no resume (TRL `save_steps`)",
    )
    save_total_limit: int = Field(
        default=2,
        ge=1,
        description="trainer checkpoints kept in the work dir, older ones deleted (TRL `save_total_limit`)",
    )
    num_processes: int = Field(
        default=1,
        ge=1,
        description="training processes; > 1 runs `prefscale train-dpo` under `accelerate launch` (DDP; gloo on "
        "CPU)",
    )
    accelerate_config: str | None = Field(
        default=None,
        description="an accelerate config file (DeepSpeed/FSDP) to launch training with, e.g. "
        "deploy/accelerate/zero2.yaml; null: plain DDP when num_processes > 1",
    )
    lora: LoraConfig | None = Field(
        default=LoraConfig(), description="train a LoRA adapter (PEFT `peft_config`); null: full fine-tuning"
    )


TRAINING_METHODS = ("dpo", "grpo", "rloo")


class TrainingConfig(_Strict):
    """How each iteration updates the policy: offline DPO on the reward's best-vs-worst pairs, or online RL
    against the reward itself (the InstructGPT recipe: GRPO or RLOO, with a KL penalty to the reference)."""

    method: Literal["dpo", "grpo", "rloo"] = Field(
        default="dpo",
        description="dpo (TRL DPOTrainer on `preference_pairs`, settings in `dpo`), grpo (TRL GRPOTrainer) or "
        "rloo (TRL RLOOTrainer): the online methods sample from the policy while training and score each "
        "completion with the recipe's `reward` sources (settings in `online`)",
    )


class OnlineSettings(_Strict):
    """The recipe's `online` section (methods grpo and rloo), mapped one-to-one onto TRL's `GRPOConfig` /
    `RLOOConfig` and PEFT's `LoraConfig`.

    The reward is the recipe's `reward` sources computed on the policy's own completions: the labeling
    functions voting on each completion and the iteration's fitted label model turning the votes into P(high)
    (`label_model`), the weak-supervision reward model (`reward_model`), or their ensemble. The reference of
    the KL term is the policy the iteration starts from (the adapter disabled).
    """

    beta: float = Field(
        default=0.05,
        ge=0,
        description="KL coefficient: the penalty on the policy's divergence from the reference (TRL `beta`; 0 "
        "does not load or use the reference)",
    )
    num_generations: int = Field(
        default=8,
        ge=2,
        description="the group size: completions sampled per prompt, whose rewards are compared with each "
        "other (TRL `num_generations`)",
    )
    per_device_train_batch_size: int = Field(
        default=40,
        ge=2,
        description="completions per device per step, a multiple of num_generations: prompts per step = this / "
        "num_generations (TRL `per_device_train_batch_size`)",
    )
    gradient_accumulation_steps: int = Field(
        default=1,
        ge=1,
        description="batches accumulated per optimizer step (TRL `gradient_accumulation_steps`)",
    )
    max_steps: int = Field(
        default=30,
        ge=1,
        description="optimizer steps per iteration, each on freshly sampled completions (TRL `max_steps`)",
    )
    learning_rate: float = Field(
        default=5e-3, gt=0, description="initial (peak) AdamW learning rate (TRL `learning_rate`)"
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        default="constant", description="learning-rate schedule (TRL `lr_scheduler_type`)"
    )
    warmup_ratio: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="share of the steps spent warming the learning rate up (TRL `warmup_steps` as a ratio)",
    )
    max_completion_length: int = Field(
        default=128, ge=1, description="tokens sampled per completion (TRL `max_completion_length`)"
    )
    temperature: float = Field(default=1.0, gt=0, description="sampling temperature (TRL `temperature`)")
    top_p: float = Field(default=1.0, gt=0, le=1, description="nucleus sampling mass (TRL `top_p`)")
    epsilon: float = Field(
        default=0.2, gt=0, lt=1, description="clipping range of the policy ratio (TRL `epsilon`)"
    )
    mask_truncated_completions: bool = Field(
        default=True,
        description="leave completions cut off at max_completion_length out of the loss, so running into the "
        "limit is never reinforced (TRL `mask_truncated_completions`)",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        default="group",
        description="grpo only: divide each advantage by the reward's standard deviation within its group, "
        "the whole batch, or not at all (TRL `scale_rewards`; none is Dr. GRPO's choice)",
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        default="dapo",
        description="grpo only: how token losses are averaged (TRL `loss_type`): dapo (over all tokens of the "
        "batch), grpo (per sequence, then per batch: favours short answers), dr_grpo (a constant "
        "normaliser), bnpo",
    )
    normalize_advantages: bool = Field(
        default=False,
        description="rloo only: standardise the leave-one-out advantages over the batch (TRL "
        "`normalize_advantages`)",
    )
    save_steps: int | None = Field(
        default=10,
        ge=1,
        description="steps between trainer checkpoints a crashed run resumes from; null: none (TRL `save_steps`)",
    )
    save_total_limit: int = Field(
        default=2, ge=1, description="trainer checkpoints kept in the work dir (TRL `save_total_limit`)"
    )
    lora: LoraConfig | None = Field(
        default=LoraConfig(), description="train a LoRA adapter (PEFT `peft_config`); null: full fine-tuning"
    )

    @model_validator(mode="after")
    def _groups(self) -> OnlineSettings:
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be a multiple of "
                f"num_generations ({self.num_generations}): each prompt's group is sampled whole"
            )
        return self
