"""The recipe's `dpo` section, mapped one-to-one onto TRL's `DPOConfig` and PEFT's `LoraConfig`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prefscale.config.base import _Strict


class LoraConfig(_Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | tuple[str, ...] = "all-linear"


class DPOSettings(_Strict):
    """The recipe's `dpo` section, mapped one-to-one onto TRL's `DPOConfig` (and PEFT's `LoraConfig`).

    `lora: null` trains every weight. `reference` is the policy the KL term is measured against: `previous`
    (the policy this iteration starts from, as in SPPO and Snorkel's loop) or the fixed `base` policy.
    `save_steps` writes trainer checkpoints (null: none) that a crashed run resumes from; `num_processes` > 1
    or an `accelerate_config` file launches `prefscale train-dpo` through `accelerate launch`.
    """

    loss_type: Literal["sigmoid", "ipo", "robust", "hinge", "sppo_hard", "sigmoid_norm"] = Field(
        default="sigmoid", description="sigmoid_norm: the length-normalised sigmoid loss"
    )
    beta: float = Field(default=0.1, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="robust: label flip probability")
    learning_rate: float = Field(default=2e-3, gt=0)
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
    ] = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    num_train_epochs: float = Field(default=2.0, gt=0)
    per_device_train_batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=16, description="tokens of prompt + response; passed explicitly")
    gradient_checkpointing: bool = False
    precompute_ref_log_probs: bool = False
    reference: Literal["previous", "base"] = "previous"
    save_steps: int | None = Field(default=10, ge=1, description="trainer checkpoint interval (null: none)")
    save_total_limit: int = Field(default=2, ge=1, description="trainer checkpoints kept in the work dir")
    num_processes: int = Field(default=1, ge=1, description="> 1: accelerate launch (DDP, gloo on CPU)")
    accelerate_config: str | None = Field(
        default=None, description="accelerate config file (DeepSpeed/FSDP), e.g. deploy/accelerate/zero2.yaml"
    )
    lora: LoraConfig | None = LoraConfig()
