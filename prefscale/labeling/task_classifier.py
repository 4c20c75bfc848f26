"""The task-type classifier: keyword LFs over the prompt, combined by majority vote or a label model."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefscale.labeling.pattern_kinds import _check_regex
from prefscale.labeling.votes import ABSTAIN, definition_version

# --- the task-type classifier -------------------------------------------------------------------------------


class TaskClassifier(BaseModel):
    """Tags each prompt's task type with keyword LFs over the prompt (one LF per pattern, voting for its task),
    combined by majority vote or Snorkel's `LabelModel`. `fill: missing` tags only prompts without a task type
    (null, empty or one of `missing_values`); `always` re-tags every prompt. A prompt no keyword decides keeps
    its value, or gets `default` when one is set. Patterns are case-insensitive regexes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["task_classifier"] = Field(
        default="task_classifier", description="always task_classifier (it tags, it does not vote)"
    )
    name: str = Field(
        default="task_classifier", pattern=r"^[a-z][a-z0-9_]*$", description="identifier, snake_case"
    )
    description: str = Field(
        default="Tags the prompt's task type from keywords (weak supervision over the prompt).",
        description="what the classifier does (shown in the UI and catalog)",
    )
    keywords: dict[str, tuple[str, ...]] = Field(
        description="task type -> case-insensitive regex patterns over the prompt, one keyword LF per pattern; "
        "at least two task types"
    )
    method: Literal["majority", "label_model"] = Field(
        default="majority",
        description="how the keyword votes combine: majority (a unique plurality wins) or label_model "
        "(Snorkel's multi-class LabelModel, with 3+ patterns)",
    )
    fill: Literal["missing", "always"] = Field(
        default="missing",
        description="missing: tag only prompts without a task type (null, empty or in missing_values); always: "
        "re-tag every prompt",
    )
    missing_values: tuple[str, ...] = Field(
        default=("general",), description="task-type values that count as missing (besides null and empty)"
    )
    default: str | None = Field(
        default=None,
        description="task type for a prompt no keyword decides; null: it keeps the value it had",
    )

    @field_validator("keywords")
    @classmethod
    def _patterns(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        if len(v) < 2:
            raise ValueError("a task classifier needs at least two task types")
        for task, pats in v.items():
            if not pats:
                raise ValueError(f"task type {task!r} has no keywords")
            for p in pats:
                _check_regex(p)
        return v

    @property
    def version(self) -> str:
        return definition_version(self)

    @property
    def vote_label(self) -> str:
        return "tag"

    @property
    def tasks(self) -> list[str]:
        return list(self.keywords)

    def keyword_matrix(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        """[n, n_patterns] votes: the task's index where the pattern matches the prompt, else ABSTAIN."""
        cols, names = [], []
        frame = pl.DataFrame({"prompt": prompts.fill_null("")})
        for k, (task, pats) in enumerate(self.keywords.items()):
            for j, p in enumerate(pats):
                hit = frame.select(pl.col("prompt").str.contains(f"(?i){p}")).to_series().to_numpy()
                cols.append(np.where(hit, k, ABSTAIN))
                names.append(f"{task}_{j}")
        return np.stack(cols, axis=1).astype(np.int64), names

    def predict(self, prompts: pl.Series, seed: int = 0) -> list[str | None]:
        """The tag of each prompt (None where no keyword decides)."""
        if prompts.len() == 0:
            return []
        mat, _ = self.keyword_matrix(prompts)
        k = len(self.keywords)
        if self.method == "label_model" and mat.shape[1] >= 3 and (mat != ABSTAIN).any():
            import logging

            from snorkel.labeling.model import LabelModel

            logging.getLogger("snorkel").setLevel(logging.WARNING)
            lm = LabelModel(cardinality=k, verbose=False, device="cpu")
            lm.fit(mat, n_epochs=100, seed=seed, progress_bar=False)
            pred = lm.predict(mat, tie_break_policy="abstain")
            pred = np.where((mat == ABSTAIN).all(axis=1), ABSTAIN, pred)
        else:
            counts = np.stack([(mat == c).sum(axis=1) for c in range(k)], axis=1)
            best = counts.max(axis=1)
            unique = (counts == best[:, None]).sum(axis=1) == 1
            pred = np.where((best > 0) & unique, counts.argmax(axis=1), ABSTAIN)
        tasks = self.tasks
        return [tasks[int(p)] if p != ABSTAIN else None for p in pred]


def classify_tasks(rows: pl.DataFrame, clf: TaskClassifier, seed: int = 0) -> pl.DataFrame:
    """`rows` with `task_type` filled (or re-tagged) by the classifier and `task_type_source` saying where each
    value came from: `given`, `classifier`, `default` or `none`."""
    if "prompt" not in rows.columns:
        raise ValueError("the task classifier needs a 'prompt' column")
    given = (
        rows["task_type"] if "task_type" in rows.columns else pl.Series([None] * rows.height, dtype=pl.String)
    )
    prompts = rows["prompt"]
    uniq = prompts.unique(maintain_order=True)
    tags = dict(zip(uniq.to_list(), clf.predict(uniq, seed), strict=True))
    missing = set(clf.missing_values) | {""}
    out_type, source = [], []
    for g, p in zip(given.to_list(), prompts.to_list(), strict=True):
        wants = clf.fill == "always" or g is None or g in missing
        tag = tags.get(p) if wants else None
        if not wants:
            out_type.append(g)
            source.append("given")
        elif tag is not None:
            out_type.append(tag)
            source.append("classifier")
        elif clf.default is not None:
            out_type.append(clf.default)
            source.append("default")
        else:
            out_type.append(g)
            source.append("none")
    return rows.with_columns(
        pl.Series("task_type", out_type, dtype=pl.String),
        pl.Series("task_type_source", source, dtype=pl.String),
    )
