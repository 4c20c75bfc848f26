"""The recipe's `labeling` section: the SMEs' labeling functions, task types, the label model, LF packs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prefscale.config.base import _Strict
from prefscale.labeling.pattern_kinds import python_lf_problems
from prefscale.labeling.registry import (
    MODEL_KINDS,
    AnyLabelingFunction,
    LabelingFunction,
    ModelLabelingFunction,
)
from prefscale.labeling.self_judge_kind import with_criteria
from prefscale.labeling.task_classifier import TaskClassifier
from prefscale.labeling.task_types import DEFAULT_TASK_TYPE, TaskTypeRule, task_type_of
from prefscale.labeling.votes import validate_lfs


class LabelModelConfig(_Strict):
    """Snorkel's `LabelModel` (cardinality 2) that turns the LF votes into P(high): its `fit` arguments."""

    n_epochs: int = Field(
        default=200, ge=1, description="training epochs of the label model (Snorkel `fit(n_epochs=...)`)"
    )
    lr: float = Field(default=0.01, gt=0, description="label model learning rate (Snorkel `fit(lr=...)`)")
    l2: float = Field(
        default=1.0,
        ge=0,
        description="L2 regularization that pulls the LF accuracies toward prec_init (Snorkel `fit(l2=...)`)",
    )
    prec_init: float = Field(
        default=0.8,
        gt=0.5,
        lt=1,
        description="the accuracy each LF is assumed to have before fitting, in (0.5, 1) (Snorkel "
        "`fit(prec_init=...)`)",
    )
    use_gold: Literal["report", "class_balance"] = Field(
        default="report",
        description="SME gold (asset sme_annotations): report: only score the label model and majority vote "
        "on it; class_balance: also pass it to the label model as Y_dev (it sets the class balance)",
    )
    gold_lf_filter: Literal["off", "disable"] = Field(
        default="off",
        description="what SME gold does to a labeling function it shows worse than chance (accuracy below 0.5 "
        "on at least gold_min_votes gold rows it voted on, one-sided binomial p < 0.05): off: only flag it "
        "(lf_summary's gold_action); disable: fit the label model without its votes, as if it abstained "
        "everywhere (the run fails, naming them, if that would disable every function)",
    )
    gold_min_votes: int = Field(
        default=10,
        ge=1,
        description="the gold rows a labeling function must have voted on before gold_lf_filter judges it",
    )

    def fit_options(self) -> dict[str, Any]:
        """The settings `fit_label_model` takes: n_epochs, lr, l2, prec_init."""
        return {"n_epochs": self.n_epochs, "lr": self.lr, "l2": self.l2, "prec_init": self.prec_init}


class LabelingConfig(_Strict):
    """The SMEs' labeling functions, the optional task-type classifier, and the label model.

    `functions` holds the kinds that run on a row alone (text patterns, `python` and `snorkel`); the model-backed kinds
    (`llm_prompt`, `perplexity`, `similarity`, `consensus`, `reference`, `self_judge`) go in `model_functions`. A recipe may list both in `functions`:
    the model-backed entries are moved to `model_functions` when parsed. `all_functions` is every function, the
    label matrix's columns in that order.
    """

    pack: str | None = Field(
        default=None,
        description="an LF pack (`recipes/lf_packs/<name>.yaml`, or a path): its functions come first, its task-type "
        "rules become `task_types`, and its label model settings apply unless `label_model` is given",
    )
    functions: tuple[LabelingFunction, ...] = Field(
        default=(),
        description="the SMEs' labeling functions, each with a `kind` (regex, list_format, ordered, word_ratio, "
        "length, repetition, unfinished, instruction, python, snorkel; model-backed kinds listed here are moved "
        "to model_functions); names unique",
    )
    modules: tuple[str, ...] = Field(
        default=(),
        description="folders that hold the modules of `python` and `snorkel` functions, relative to the recipe "
        "file's folder (or absolute): each is put on the import path whenever the recipe is loaded (the CLI, "
        "Dagster, `make run`), so `modules: [.]` imports a module that sits beside the recipe with no PYTHONPATH "
        "from any working directory; `prefscale recipe validate` fails naming a folder that does not exist",
    )
    model_functions: tuple[ModelLabelingFunction, ...] = Field(
        default=(),
        description="model-backed labeling functions (kind llm_prompt, perplexity, similarity, consensus, reference "
        "or self_judge), run batched after `functions`",
    )
    task_classifier: TaskClassifier | None = Field(
        default=None,
        description="keyword LFs over the prompt that tag each candidate's task type before labeling; null: "
        "none",
    )
    task_types: tuple[TaskTypeRule, ...] = Field(
        default=(),
        description="prompt rules (first match wins) that tag prompts without a task type when the pool is "
        "built; default: the pack's rules",
    )
    label_model: LabelModelConfig = Field(
        default=LabelModelConfig(),
        description="the Snorkel label model fitted on the votes; default: the pack's settings, else the "
        "defaults below",
    )

    @model_validator(mode="before")
    @classmethod
    def _route_model_kinds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("pack"):
            data = _expand_pack(data)
        if isinstance(data, dict) and isinstance(data.get("functions"), list | tuple):
            listed = list(data["functions"])
            moved = [f for f in listed if isinstance(f, dict) and f.get("kind") in MODEL_KINDS]
            if moved:
                data = dict(data)
                data["functions"] = [f for f in listed if f not in moved]
                data["model_functions"] = [*moved, *(data.get("model_functions") or [])]
        return data

    @model_validator(mode="after")
    def _unique(self) -> LabelingConfig:
        validate_lfs(self.all_functions)
        # a self_judge without its own criteria is shown the other functions' descriptions
        object.__setattr__(self, "model_functions", with_criteria(self.model_functions, self.all_functions))
        return self

    @property
    def all_functions(self) -> tuple[Any, ...]:
        """Every labeling function: `functions`, then `model_functions`."""
        return (*self.functions, *self.model_functions)

    def module_problems(self) -> list[str]:
        """One message per `modules` folder that does not exist; [] when all do."""
        return [
            f"labeling.modules: folder not found: {m}"
            for m in self.modules
            if not Path(m).expanduser().is_dir()
        ]

    def import_problems(self) -> list[str]:
        """What stops the team's code from loading: a missing `modules` folder, else (every function in it would
        fail again) each `python` / `snorkel` function that does not import; [] when all do."""
        return self.module_problems() or python_lf_problems(self.all_functions)


def _expand_pack(data: dict[str, Any]) -> dict[str, Any]:
    """The labeling section with its LF pack's functions, task-type rules and label model merged in."""

    pack = load_lf_pack(data["pack"])  # ValueError naming the pack file and its bad fields
    out = dict(data)
    own = list(out.get("functions") or [])
    out["functions"] = [lf.model_dump(mode="json", exclude_none=True) for lf in pack.functions] + own
    if "task_types" not in out:
        out["task_types"] = [r.model_dump() for r in pack.task_types]
    if "label_model" not in out:
        out["label_model"] = pack.label_model.model_dump()
    return out


LF_PACKS_DIR = Path(__file__).resolve().parents[2] / "recipes" / "lf_packs"
DEFAULT_PACK = "helpfulness"


# --- LF packs -----------------------------------------------------------------------------------------------


class LFPack(BaseModel):
    """A reusable set of labeling functions with the prompt rules that assign task types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the pack's name (letters, digits, _ . -)")
    description: str = Field(default="", description="what the pack's functions look for (free text)")
    task_types: tuple[TaskTypeRule, ...] = Field(
        default=(),
        description="prompt rules that assign task types (first match wins); they become the recipe's "
        "labeling.task_types",
    )
    functions: tuple[AnyLabelingFunction, ...] = Field(
        min_length=1,
        description="the pack's labeling functions (at least one), of any kind (the model-backed ones become "
        "a recipe's model_functions); their task_types must name the pack's task types or `general`",
    )
    label_model: LabelModelConfig = Field(
        default=LabelModelConfig(),
        description="label model settings used when the recipe gives no labeling.label_model",
    )
    tie_break: Literal["length", "none"] = Field(
        default="length",
        description="length: order rows with the same P(high) by response length in characters (longer "
        "first); none: leave ties",
    )

    @model_validator(mode="after")
    def _check(self) -> LFPack:
        validate_lfs(self.functions)
        known = {r.name for r in self.task_types} | {DEFAULT_TASK_TYPE}
        for lf in self.functions:
            unknown = sorted(set(lf.task_types or ()) - known)
            if unknown:
                raise ValueError(f"labeling function {lf.name!r} names unknown task types {unknown}")
        return self

    def task_type_of(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt's task type: the first rule whose pattern matches (case-insensitive), else `general`."""
        return task_type_of(prompts, self.task_types)


def load_lf_pack(name_or_path: str | Path = DEFAULT_PACK) -> LFPack:
    """An LF pack by name (`recipes/lf_packs/<name>.yaml`) or path; errors name the file and the bad fields."""
    p = Path(name_or_path)
    if p.suffix not in {".yaml", ".yml"} and not p.exists():
        p = LF_PACKS_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(f.stem for f in LF_PACKS_DIR.glob("*.yaml"))
        raise ValueError(f"unknown LF pack {str(name_or_path)!r}: not a file, and not one of {known}")
    try:
        data = yaml.safe_load(p.read_text())
        return LFPack.model_validate(data)
    except yaml.YAMLError as e:
        raise ValueError(f"invalid LF pack {p}: not valid YAML ({e})") from None
    except ValidationError as e:
        lines = [f"invalid LF pack {p}:"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  - {loc}: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise ValueError("\n".join(lines)) from None
