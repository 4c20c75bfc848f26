"""Recipes: one YAML file selects the models, data, labeling functions, reward source and training settings.

Every section is a strict schema (unknown keys are errors), so a typo fails before any compute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prefscale.labeling import LabelingFunction, validate_lfs

RECIPES_DIR = Path(os.environ.get("PREFSCALE_RECIPES_DIR", Path(__file__).resolve().parents[1] / "recipes"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddedModel(_Strict):
    """The tiny offline policy: a byte-level BPE tokenizer and a small Llama trained on the demo corpus."""

    vocab_size: int = Field(default=1024, ge=300)
    hidden_size: int = Field(default=128, ge=16)
    num_layers: int = Field(default=4, ge=1)
    num_heads: int = Field(default=4, ge=1)
    intermediate_size: int = Field(default=256, ge=16)
    max_position_embeddings: int = Field(default=256, ge=64)
    corpus_prompts: int = Field(default=1200, ge=8)
    responses_per_prompt: int = Field(default=3, ge=1)
    train_steps: int = Field(default=600, ge=1)
    batch_size: int = Field(default=32, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)


class PolicyConfig(_Strict):
    """Where the base policy comes from."""

    source: Literal["embedded", "pretrained"] = "embedded"
    model: str | None = Field(default=None, description="hub id or local folder (source: pretrained)")
    revision: str | None = None
    embedded: EmbeddedModel = EmbeddedModel()

    @model_validator(mode="after")
    def _model_given(self) -> PolicyConfig:
        if self.source == "pretrained" and not self.model:
            raise ValueError("policy.model is required when policy.source is 'pretrained'")
        if (
            self.source == "pretrained"
            and is_local_path(self.model)
            and not Path(self.model).expanduser().exists()
        ):
            raise ValueError(f"policy.model path does not exist: {self.model}")
        return self


def is_local_path(ref: str | None) -> bool:
    """A model reference that names a local folder (absolute, ./, ../ or ~/), not a hub id like org/name."""
    return bool(ref) and ref.startswith(("/", "./", "../", "~"))


class DataConfig(_Strict):
    """The prompt pool: the embedded demo domain or a file of prompts (JSONL, CSV or Parquet)."""

    source: Literal["embedded", "file"] = "embedded"
    path: str | None = Field(default=None, description="prompts file with a 'prompt' column (source: file)")
    pool_size: int = Field(default=560, ge=4, description="embedded: prompts generated before de-duplication")
    prompts_per_iteration: int = Field(default=150, ge=1)
    heldout_size: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _path_given(self) -> DataConfig:
        if self.source == "file" and not self.path:
            raise ValueError("data.path is required when data.source is 'file'")
        return self


class GenerationConfig(_Strict):
    """Candidate sampling."""

    num_candidates: int = Field(default=5, description="N responses per prompt (>= 2: a pair needs two)")
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    batch_size: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _n(self) -> GenerationConfig:
        if self.num_candidates < 2:
            raise ValueError(
                f"generation.num_candidates must be >= 2 to form pairs, got {self.num_candidates}"
            )
        return self


class LabelModelConfig(_Strict):
    n_epochs: int = Field(default=200, ge=1)
    lr: float = Field(default=0.01, gt=0)
    l2: float = Field(default=1.0, ge=0, description="pulls LF accuracies toward prec_init")
    prec_init: float = Field(default=0.8, gt=0.5, lt=1)


class LabelingConfig(_Strict):
    functions: tuple[LabelingFunction, ...] = Field(min_length=1)
    label_model: LabelModelConfig = LabelModelConfig()

    @model_validator(mode="after")
    def _unique(self) -> LabelingConfig:
        validate_lfs(self.functions)
        return self


class RewardConfig(_Strict):
    source: Literal["label_model"] = "label_model"


class PairsConfig(_Strict):
    """How `prefscale.pairs.select_pairs` picks one (chosen, rejected) pair per prompt; draws use `Recipe.seed`."""

    strategy: Literal["best_vs_worst", "random_pair", "best_vs_random", "min_margin", "length_penalized"] = (
        "best_vs_worst"
    )
    min_margin: float = Field(
        default=1e-6, ge=0, description="drop prompts whose best-worst margin is smaller"
    )
    unfinished_is_worst: bool = Field(default=True, description="a sample cut at max_new_tokens ranks last")
    length_penalty: float = Field(
        default=0.0, ge=0, description="length_penalized: reward minus this times the length in characters"
    )

    @model_validator(mode="after")
    def _penalty_used(self) -> PairsConfig:
        if self.length_penalty and self.strategy != "length_penalized":
            raise ValueError(
                f"pairs.length_penalty is only used by strategy 'length_penalized', not {self.strategy!r}"
            )
        return self


class LoraConfig(_Strict):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | tuple[str, ...] = "all-linear"


class DPOSettings(_Strict):
    """Maps onto TRL's DPOConfig."""

    loss_type: Literal["sigmoid", "ipo", "robust", "hinge", "sppo_hard"] = "sigmoid"
    beta: float = Field(default=0.1, gt=0)
    learning_rate: float = Field(default=2e-3, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    num_train_epochs: float = Field(default=2.0, gt=0)
    per_device_train_batch_size: int = Field(default=16, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=16)
    gradient_checkpointing: bool = False
    lora: LoraConfig | None = LoraConfig()


class EvaluationConfig(_Strict):
    samples_per_prompt: int = Field(default=5, ge=1)
    judge: Literal["rubric"] = "rubric"


class Recipe(_Strict):
    """A whole alignment run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 17
    iterations: int = Field(default=3, description="K: alignment iterations (partitions 1..K)")
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig = DataConfig()
    generation: GenerationConfig = GenerationConfig()
    labeling: LabelingConfig
    reward: RewardConfig = RewardConfig()
    pairs: PairsConfig = PairsConfig()
    dpo: DPOSettings = DPOSettings()
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="after")
    def _k(self) -> Recipe:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        return self


class RecipeError(ValueError):
    """A recipe that cannot be used, with the file and the offending fields named."""


def _format_errors(source: str, err: ValidationError) -> str:
    lines = [f"invalid recipe {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_recipe(data: Any, source: str = "<dict>") -> Recipe:
    """Validate a recipe mapping; raise `RecipeError` naming every bad field."""
    if not isinstance(data, dict):
        raise RecipeError(
            f"invalid recipe {source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_errors(source, e)) from None


def resolve_recipe_path(name_or_path: str) -> Path:
    """A recipe file path, or the name of a recipe shipped in the repository's `recipes/`."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {p}")
        return p
    shipped = RECIPES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(f.stem for f in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(f"unknown recipe {name_or_path!r}: not a file, and not one of {known}")


def load_recipe(name_or_path: str, overrides: dict[str, Any] | None = None) -> Recipe:
    """Load and validate a recipe by name or path, with optional nested overrides (e.g. for tests)."""
    path = resolve_recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"invalid recipe {path}: not valid YAML ({e})") from None
    if overrides:
        data = deep_merge(data or {}, overrides)
    return parse_recipe(data, str(path))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, recursively for nested mappings."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
