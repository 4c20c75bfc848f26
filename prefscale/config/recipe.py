"""Recipes: one YAML file selects the models, data, labeling functions, reward source and training settings.

Every section is a strict schema (unknown keys are errors), so a typo fails before any compute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from prefscale.artifacts import ITERATION_ASSETS
from prefscale.config.base import DATA_FILE_SUFFIXES, RecipeError, _Strict, is_local_path
from prefscale.config.data import DataConfig
from prefscale.config.evaluation import EMBEDDED_JUDGE, EvaluationConfig, primary_judge_choices
from prefscale.config.generation import GenerationConfig
from prefscale.config.labeling import LabelingConfig
from prefscale.config.pairs import PairsConfig
from prefscale.config.policy import PolicyConfig
from prefscale.config.rewards import RewardConfig, SFTConfig
from prefscale.config.training import DPOSettings, OnlineSettings, TrainingConfig
from prefscale.labeling.pattern_kinds import add_lf_module_dirs
from prefscale.rewards.registry import ONLINE_SOURCES

RECIPES_DIR = Path(os.environ.get("PREFSCALE_RECIPES_DIR", Path(__file__).resolve().parents[2] / "recipes"))


class Recipe(_Strict):
    """A whole alignment run."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the run's name (letters, digits, _ . -): in metadata and the registered MLflow model "
        "`prefscale-<name>`",
    )
    description: str = Field(default="", description="what the recipe is for (free text)")
    seed: int = Field(
        default=17,
        description="the run's seed: the prompt split, the embedded policy, sampling, pair draws, the label "
        "model and DPO derive theirs from it",
    )
    iterations: int = Field(
        default=3,
        description="K: alignment iterations (Dagster partitions 1..K), each on its own prompt shard and "
        "starting from the previous checkpoint",
    )
    policy: PolicyConfig = Field(default=PolicyConfig(), description="the base policy: where it comes from")
    data: DataConfig = Field(default=DataConfig(), description="the prompt pool, its held-out set and shards")
    generation: GenerationConfig = Field(
        default=GenerationConfig(), description="candidate sampling and the backend that samples"
    )
    labeling: LabelingConfig = Field(
        description="the SMEs' labeling functions, task types and the label model (required)"
    )
    reward: RewardConfig = Field(
        default=RewardConfig(), description="where rewards come from: one source or a weighted ensemble"
    )
    pairs: PairsConfig = Field(
        default=PairsConfig(), description="how one (chosen, rejected) pair per prompt is picked"
    )
    sft: SFTConfig = Field(
        default=SFTConfig(), description="the reward-curated SFT subset (asset curated_sft)"
    )
    training: TrainingConfig = Field(
        default=TrainingConfig(), description="how each iteration updates the policy: dpo, grpo or rloo"
    )
    dpo: DPOSettings = Field(
        default=DPOSettings(), description="DPO training: TRL's DPOConfig and PEFT's LoraConfig"
    )
    online: OnlineSettings = Field(
        default=OnlineSettings(),
        description="online RL (training.method grpo or rloo): TRL's GRPOConfig / RLOOConfig and PEFT's "
        "LoraConfig; the reward is the `reward` section's sources computed on the policy's completions",
    )
    evaluation: EvaluationConfig = Field(
        default=EvaluationConfig(), description="held-out evaluation, the judges and best-of-N"
    )

    @model_validator(mode="before")
    @classmethod
    def _embedded_judge(cls, data: Any) -> Any:
        """A null `evaluation.judge` is `rubric` when the prompts are the embedded domain's (its SME rubric);
        with any other source it stays null and `_primary_judge` names the choices."""
        if not isinstance(data, dict):
            return data
        d = data.get("data")
        source = d.get("source", "embedded") if isinstance(d, dict) else getattr(d, "source", "embedded")
        ev = data.get("evaluation", {})
        if isinstance(ev, EvaluationConfig):
            ev = ev.model_dump(exclude_unset=True)
        if source != "embedded" or not isinstance(ev, dict) or ev.get("judge") is not None:
            return data
        return {**data, "evaluation": {**ev, "judge": EMBEDDED_JUDGE}}

    @model_validator(mode="after")
    def _primary_judge(self) -> Recipe:
        judge, source = self.evaluation.judge, self.data.source
        if judge is None:
            raise ValueError(
                f"evaluation.judge is required when data.source is {source!r}: the default judge, rubric, scores "
                "the embedded Lumora demo domain only (it checks for things like naming Lumora), not your prompts. "
                f"Name a primary judge independent of the training reward: {primary_judge_choices()}"
            )
        if judge == "rubric" and source != "embedded":
            raise ValueError(
                "evaluation.judge rubric scores the embedded Lumora demo domain only (it checks for things like "
                f"naming Lumora), and data.source is {source!r}. Name a primary judge independent of the "
                f"training reward: {primary_judge_choices()}"
            )
        if judge == "pairrm" and "pairrm" in self.reward.names:
            raise ValueError(
                "evaluation.judge pairrm is also in reward.sources: the training reward would judge itself. Name "
                f"another primary judge: {primary_judge_choices(exclude=('pairrm',))}"
                + ("; or rubric (the embedded domain's SME rubric)" if source == "embedded" else "")
            )
        return self

    @model_validator(mode="after")
    def _k(self) -> Recipe:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.training.method != "dpo":
            offline = [s.source for s in self.reward.sources if s.source not in ONLINE_SOURCES]
            if offline:
                raise ValueError(
                    f"training.method {self.training.method} scores completions online, and reward.sources "
                    f"{offline} cannot (online: {', '.join(ONLINE_SOURCES)})"
                )
        return self


def recipe_input_problems(recipe: Recipe) -> list[str]:
    """What a recipe reads from local disk that is not there, one message per field; [] when all exist.

    Hub ids (`org/name`) are accepted as they are: checking them would need the network. Relative paths are
    relative to the working directory (the repository root for `make` and Dagster), except `labeling.modules`
    and a `data.path` written `./...` or `../...`, made absolute from the recipe file's folder when it is loaded.
    The `labeling.modules` folders and the team's modules: `LabelingConfig.import_problems`.
    """
    problems = []
    d = recipe.data
    if d.source == "file" and not Path(d.path or "").expanduser().is_file():
        problems.append(f"data.path: prompts file not found: {d.path}")
    if (
        d.source == "hf_dataset"
        and _looks_local(d.dataset)
        and not Path(d.dataset or "").expanduser().exists()
    ):
        problems.append(f"data.dataset: local dataset not found: {d.dataset}")
    for i, src in enumerate(recipe.reward.sources):
        if src.model and is_local_path(src.model) and not Path(src.model).expanduser().exists():
            problems.append(f"reward.sources.{i}.model: ranker folder not found: {src.model}")
    ev = recipe.evaluation
    for name in ("pairrm_model", "local_llm_model"):
        ref = getattr(ev, name)
        if ref and is_local_path(ref) and not Path(ref).expanduser().exists():
            problems.append(f"evaluation.{name}: model folder not found: {ref}")
    if recipe.dpo.accelerate_config and not Path(recipe.dpo.accelerate_config).expanduser().is_file():
        problems.append(f"dpo.accelerate_config: file not found: {recipe.dpo.accelerate_config}")
    return problems


def _looks_local(ref: str | None) -> bool:
    """A dataset reference that names a local folder or data file rather than a hub id."""
    return is_local_path(ref) or Path(ref or "").suffix in DATA_FILE_SUFFIXES


def iteration_assets(recipe: Recipe) -> tuple[str, ...]:
    """The assets one iteration of `make run` materializes, in order: best_of_n only when the recipe enables it."""
    bo_n = ("best_of_n",) if recipe.evaluation.best_of_n_enabled else ()
    return (*ITERATION_ASSETS, *bo_n, "alpaca_eval_results")


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
    """A recipe file path, a folder holding `recipe.yaml` (as `prefscale init` writes), or the name of a recipe
    shipped in the repository's `recipes/`."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "recipe.yaml").is_file():
        return p / "recipe.yaml"
    if p.suffix in {".yaml", ".yml"} or p.exists():
        if p.is_dir():
            raise RecipeError(f"recipe file not found: {p} is a folder without a recipe.yaml")
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"invalid recipe {path}: not valid YAML ({e})") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise RecipeError(f"invalid recipe {path}: not UTF-8 text (line {line}); save it as UTF-8") from None
    except OSError as e:
        raise RecipeError(f"cannot read the recipe {path}: {e.strerror or e}") from None
    if overrides:
        data = deep_merge(data or {}, overrides)
    recipe = parse_recipe(_recipe_relative(data, path.parent), str(path))
    add_lf_module_dirs(recipe.labeling.modules)
    return recipe


def _recipe_relative(data: Any, folder: Path) -> Any:
    """The recipe mapping with the paths that are relative to the recipe file made absolute from `folder` (the
    recipe file's own), so they mean the same from any working directory and in every process that loads the
    file: every `labeling.modules` folder, and a `data.path` written `./...` or `../...`."""
    if not isinstance(data, dict):
        return data
    base = folder.expanduser().resolve()
    labeling, d = data.get("labeling"), data.get("data")
    modules = labeling.get("modules") if isinstance(labeling, dict) else None
    if isinstance(modules, list | tuple):  # else absent, or a wrong type the schema names
        absolute = [
            os.path.normpath(base / Path(m).expanduser()) if isinstance(m, str) and m.strip() else m
            for m in modules
        ]
        data = {**data, "labeling": {**labeling, "modules": absolute}}
    path = d.get("path") if isinstance(d, dict) else None
    if isinstance(path, str) and path.replace("\\", "/").startswith(("./", "../")):
        data = {**data, "data": {**d, "path": os.path.normpath(base / path)}}
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` merged into a copy of `base`, recursively for nested mappings."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
