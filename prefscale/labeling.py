"""SME labeling functions: declared in recipes, compiled to vectorised polars expressions.

Each labeling function (LF) votes HIGH (1), LOW (0) or ABSTAIN (-1) on every (prompt, response) row. LFs are
noisy, partial heuristics of what SMEs want; the label model (`prefscale.label_model`) denoises their votes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

ABSTAIN, LOW, HIGH = -1, 0, 1
VOTE_DTYPE = pl.Int8


_WORDS = r"[A-Za-z']+"
_INLINE_FLAGS = re.compile(r"^\(\?[a-zA-Z-]+\)")  # a pattern that sets its own flags keeps them


def _check_regex(v: str) -> str:
    try:
        pl.select(pl.lit("x").str.contains(v))
    except Exception as e:  # polars raises ComputeError for bad patterns
        raise ValueError(f"invalid regex {v!r}: {e}") from e
    return v


class _LFBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="unique identifier, snake_case")
    description: str = ""
    vote: Literal["high", "low"] = Field(description="the vote cast when the pattern fires")
    task_types: tuple[str, ...] | None = Field(default=None, description="only vote on these task types")

    @property
    def version(self) -> str:
        """Hash of the definition: changes whenever the function's behaviour can."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


class RegexLF(_LFBase):
    """Fires when `pattern` matches at least `min_count` times (case-insensitive unless the pattern says)."""

    kind: Literal["regex"] = "regex"
    pattern: str
    min_count: int = Field(default=1, ge=1)
    field: Literal["response", "prompt"] = "response"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return _check_regex(v)


class ListFormatLF(_LFBase):
    """Fires when at least `min_items` lines start like list items (`1.`, `-`, `*`)."""

    kind: Literal["list_format"] = "list_format"
    min_items: int = Field(default=2, ge=1)


class OrderedLF(_LFBase):
    """Fires when the patterns all occur, in this order (e.g. acknowledge → steps → follow-up)."""

    kind: Literal["ordered"] = "ordered"
    patterns: tuple[str, ...] = Field(min_length=2)

    @field_validator("patterns")
    @classmethod
    def _compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_regex(p) for p in v)


class WordRatioLF(_LFBase):
    """Fires when words from `words` make up at least `min_ratio` of the response's words."""

    kind: Literal["word_ratio"] = "word_ratio"
    words: tuple[str, ...] = Field(min_length=1)
    min_ratio: float = Field(gt=0, le=1)


class LengthLF(_LFBase):
    """Fires when the response's word count lies outside [min_words, max_words]."""

    kind: Literal["length"] = "length"
    min_words: int | None = Field(default=None, ge=0)
    max_words: int | None = Field(default=None, ge=1)


class FinishLF(_LFBase):
    """A metric LF on generation metadata: fires when the sample was cut at the token limit."""

    kind: Literal["unfinished"] = "unfinished"


LabelingFunction = Annotated[
    RegexLF | ListFormatLF | OrderedLF | WordRatioLF | LengthLF | FinishLF, Field(discriminator="kind")
]


def _fires(lf: Any) -> pl.Expr:
    resp = pl.col("response")
    if isinstance(lf, RegexLF):
        src = pl.col(lf.field)
        pat = lf.pattern if _INLINE_FLAGS.match(lf.pattern) else f"(?i){lf.pattern}"
        return src.str.count_matches(pat) >= lf.min_count
    if isinstance(lf, ListFormatLF):
        return resp.str.count_matches(r"(?m)^\s*(\d+[.)]|[-*•])\s+\w") >= lf.min_items
    if isinstance(lf, OrderedLF):
        pat = "(?is)" + ".*?".join(f"(?:{p})" for p in lf.patterns)
        return resp.str.contains(pat)
    if isinstance(lf, WordRatioLF):
        alt = "|".join(re.escape(w) for w in lf.words)
        hits = resp.str.count_matches(rf"(?i)\b(?:{alt})\b")
        total = resp.str.count_matches(_WORDS)
        return (total > 0) & (hits / total.cast(pl.Float64).clip(lower_bound=1) >= lf.min_ratio)
    if isinstance(lf, LengthLF):
        n = resp.str.count_matches(_WORDS)
        cond = pl.lit(False)
        if lf.min_words is not None:
            cond = cond | (n < lf.min_words)
        if lf.max_words is not None:
            cond = cond | (n > lf.max_words)
        return cond
    if isinstance(lf, FinishLF):
        return pl.col("finish_reason") == "length"
    raise TypeError(f"unsupported labeling function {lf!r}")  # pragma: no cover


def lf_expression(lf: Any) -> pl.Expr:
    """The LF as a polars expression yielding its vote (HIGH/LOW/ABSTAIN) per row."""
    vote = HIGH if lf.vote == "high" else LOW
    fires = _fires(lf).fill_null(False)
    if lf.task_types:
        fires = fires & pl.col("task_type").is_in(list(lf.task_types))
    return pl.when(fires).then(pl.lit(vote)).otherwise(pl.lit(ABSTAIN)).cast(VOTE_DTYPE).alias(lf.name)


def validate_lfs(lfs: Sequence[Any]) -> None:
    """Reject an empty set or duplicate names."""
    if not lfs:
        raise ValueError("at least one labeling function is required")
    names = [lf.name for lf in lfs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate labeling function names: {dupes}")


def apply_lfs(rows: pl.DataFrame, lfs: Sequence[Any]) -> pl.DataFrame:
    """Label matrix: one Int8 column per LF (named after it), in `lfs` order, plus `candidate_id`."""
    validate_lfs(lfs)
    needed = {"candidate_id", "response", "task_type"}
    if any(isinstance(lf, FinishLF) for lf in lfs):
        needed.add("finish_reason")
    if any(isinstance(lf, RegexLF) and lf.field == "prompt" for lf in lfs):
        needed.add("prompt")
    missing = needed - set(rows.columns)
    if missing:
        raise ValueError(f"labeling input lacks columns {sorted(missing)}")
    votes = rows.select(pl.col("candidate_id"), *[lf_expression(lf) for lf in lfs])
    for lf in lfs:
        bad = votes.filter(~pl.col(lf.name).is_in([ABSTAIN, LOW, HIGH]))
        if bad.height:
            raise ValueError(
                f"labeling function {lf.name!r} returned {bad[lf.name][0]} for candidate {bad['candidate_id'][0]}"
            )
    return votes


def lf_catalog(lfs: Sequence[Any]) -> pl.DataFrame:
    """Name, kind, version, vote and description of each LF (for lineage and the UI)."""
    return pl.DataFrame(
        {
            "lf_name": [lf.name for lf in lfs],
            "kind": [lf.kind for lf in lfs],
            "version": [lf.version for lf in lfs],
            "vote": [lf.vote for lf in lfs],
            "description": [lf.description for lf in lfs],
        }
    )


def lf_summary(votes: pl.DataFrame, lf_names: Sequence[str]) -> pl.DataFrame:
    """Coverage, overlap and conflict per LF (Snorkel's LFAnalysis definitions), vectorised."""
    n = max(votes.height, 1)
    mat = votes.select(lf_names).to_numpy()
    active = mat != ABSTAIN
    n_active = active.sum(axis=1)
    has_high = (mat == HIGH).any(axis=1)
    has_low = (mat == LOW).any(axis=1)
    rows = []
    for j, name in enumerate(lf_names):
        col = active[:, j]
        conflict = col & has_high & has_low  # binary labels: j disagrees with someone on these rows
        rows.append(
            {
                "lf_name": name,
                "polarity": sorted({int(v) for v in mat[col, j]}),
                "coverage": float(col.sum() / n),
                "overlaps": float((col & (n_active > 1)).sum() / n),
                "conflicts": float(conflict.sum() / n),
            }
        )
    return pl.DataFrame(rows)
