"""Reward frames and names shared by every reward source, the source protocol, and the one dispatcher.

A reward source is an object with a `name` and `score(rows, ctx) -> SourceScores`, in its own module, named in
`prefscale.rewards.registry.REWARD_SOURCES`. Every caller (the pipeline's `reward_scores`, the pair ablation,
best-of-N, `prefscale score`) builds a `ScoringContext` and calls `score_rows`: adding a source is one module
plus one line in the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import polars as pl

from prefscale.registry import UnknownEntryError
from prefscale.rewards import registry

if TYPE_CHECKING:
    from prefscale.compute import Compute

REWARD_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "source": pl.String,
    "reward": pl.Float64,
    "rank": pl.Int32,
}
ENSEMBLES = ("zscore", "rank", "none")
ENSEMBLE_SOURCE = "ensemble"
TINY_PAIRRM = (
    "tiny"  # `model: tiny`: a random tiny ranker built on the fly (code-path check, not a quality source)
)
DEFAULT_PAIRRM = "llm-blender/PairRM"
SCORE_SCHEMA = {"candidate_id": pl.String, "score": pl.Float64}


def score_column(source: str) -> str:
    return f"score_{source}"


class MissingInputError(ValueError):
    """A reward source was not given an input it needs (the message says which)."""


@dataclass(frozen=True)
class ScoringContext:
    """What the reward sources may need besides the rows; each reads its own fields.

    `labels`: precomputed quality labels (candidate_id, p_high); or else `lfs` with `label_model_params` (a fitted
    label model, `quality_labels`' `label_model` table) to score new rows under it, the model-backed LFs running
    in `lf_context`; or else `lfs` (+ `label_model` settings, None: the fit's defaults) to fit a label model on
    the rows themselves; `tie_break` `length` orders equal scores
    by response length. `reward_model_dir`: a trained reward model folder. `ranker`: a PairRM hub id, folder or
    `tiny`; when None, `policy_source` (the recipe's `policy.source`) picks the default ranker, and None there
    means no default. `compute` (None: resolved from `device`, which may be `auto`) and `seed` serve the models.
    `group_by`: the columns whose rows are compared with each other (a prompt; best-of-N: one slot's pool).
    `kind` is how errors name a source, and `needs` how the caller words a missing input (by field name, e.g.
    the CLI's `--model`) in place of the source's own wording.
    """

    labels: pl.DataFrame | None = None
    lfs: Sequence[Any] = ()
    label_model: Any = None
    label_model_params: pl.DataFrame | None = None
    lf_context: Any = None
    tie_break: str = "none"
    reward_model_dir: str | Path | None = None
    ranker: str | None = None
    policy_source: str | None = "embedded"
    compute: Compute | None = None
    device: str = "cpu"
    seed: int = 0
    group_by: tuple[str, ...] = ("prompt_id",)
    kind: str = "reward source"
    needs: Mapping[str, str] = field(default_factory=dict)

    def missing(self, source: str, what: str, *inputs: str) -> MissingInputError:
        """The error for a missing input: `what`, unless the caller words one of `inputs` (field names)."""
        said = next((self.needs[i] for i in inputs if i in self.needs), what)
        return MissingInputError(f"{self.kind} {source!r} needs {said}")


@dataclass(frozen=True)
class SourceScores:
    """A source's (candidate_id, score) for every row, higher is better; PairRM adds its matrix rows
    (candidate_id, matrix_index, pairrm_logits)."""

    scores: pl.DataFrame
    matrix: pl.DataFrame | None = None


@runtime_checkable
class RewardSourceImpl(Protocol):
    """A reward source: scores rows carrying candidate_id, prompt_id, prompt, response (finish_reason and
    task_type where known)."""

    name: str

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores: ...


def reward_source(name: str, kind: str = "reward source") -> RewardSourceImpl:
    """The registered source `name`; an unknown name fails listing the known ones."""
    sources = registry.REWARD_SOURCES
    if name not in sources:
        raise UnknownEntryError(f"unknown {kind} {name!r}; known: {', '.join(sources.names)}")
    return sources.get(name)


def score_rows(source: str, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
    """Score `rows` with the registered `source`; checks that every row got exactly one score."""
    out = reward_source(source, ctx.kind).score(rows, ctx)
    scores = out.scores.select("candidate_id", pl.col("score").cast(pl.Float64))
    ids = scores["candidate_id"]
    if scores.height != rows.height or ids.n_unique() != ids.len() or set(ids) != set(rows["candidate_id"]):
        raise ValueError(
            f"{ctx.kind} {source!r} returned {scores.height} scores ({ids.n_unique()} candidates) "
            f"for {rows.height} rows: it must score every row once"
        )
    return SourceScores(scores, out.matrix)
