"""Applying labeling functions: the label matrix, vectorised for pattern kinds, row-wise for `python` and
`snorkel`, batched for model-backed kinds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from prefscale.labeling.context import LFContext
from prefscale.labeling.model_kinds import _ModelLF
from prefscale.labeling.pattern_kinds import (
    _WORDS,
    PythonLF,
    SnorkelLF,
    _LFBase,
)
from prefscale.labeling.votes import _VOTES, _valid_vote

if TYPE_CHECKING:  # pragma: no cover
    from snorkel.labeling import LabelingFunction as SnorkelLabelingFunction
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW, VOTE_DTYPE, LabelingFunctionError, validate_lfs

_WORD_COUNT = "__prefscale_word_count"  # apply_lfs' shared word-count column (not in its output)


def lf_expression(lf: Any, words: pl.Expr | None = None) -> pl.Expr:
    """The LF as a polars expression yielding its vote (HIGH/LOW/ABSTAIN) per row.

    `words` is the response's word count; `apply_lfs` computes it once for all LFs and passes the column.
    """
    if words is None:
        words = pl.col("response").str.count_matches(_WORDS)
    vote = HIGH if lf.vote == "high" else LOW
    fires = lf.fires(words).fill_null(False)
    if lf.task_types:
        fires = fires & pl.col("task_type").is_in(list(lf.task_types))
    return pl.when(fires).then(pl.lit(vote, VOTE_DTYPE)).otherwise(pl.lit(ABSTAIN, VOTE_DTYPE)).alias(lf.name)


def apply_lfs(rows: pl.DataFrame, lfs: Sequence[Any]) -> pl.DataFrame:
    """Label matrix: one Int8 column per LF (named after it), in `lfs` order, plus `candidate_id`.

    Text-pattern LFs run as one vectorised polars query; `python` and `snorkel` LFs are called row by row (the
    `snorkel` ones on pandas rows, as `PandasLFApplier` calls them). Model-backed kinds
    (`prefscale.labeling`) need a model context: use `prefscale.labeling.apply.apply_all_lfs`.
    """
    validate_lfs(lfs)
    needs_model = [lf for lf in lfs if not isinstance(lf, _LFBase | PythonLF | SnorkelLF)]
    if needs_model:
        lf = needs_model[0]
        raise TypeError(
            f"labeling function {lf.name!r} (kind {lf.kind}) needs a model context: "
            "use prefscale.labeling.apply.apply_all_lfs(rows, lfs, context)"
        )
    pattern_lfs = [lf for lf in lfs if isinstance(lf, _LFBase)]
    needed = {"candidate_id", "response", "task_type"} if pattern_lfs else {"candidate_id"}
    for lf in pattern_lfs:
        needed |= lf.input_columns()
    if any(isinstance(lf, PythonLF | SnorkelLF) and lf.task_types for lf in lfs):
        needed.add("task_type")
    missing = needed - set(rows.columns)
    if missing:
        raise ValueError(f"labeling input lacks columns {sorted(missing)}")
    # One lazy query: polars runs the LFs in parallel, and the word count that length and word-ratio LFs
    # share is computed once per row.
    query = rows.lazy()
    words = None
    if any(lf.uses_word_count for lf in pattern_lfs):
        query = query.with_columns(pl.col("response").str.count_matches(_WORDS).alias(_WORD_COUNT))
        words = pl.col(_WORD_COUNT)
    votes = query.select(pl.col("candidate_id"), *[lf_expression(lf, words) for lf in pattern_lfs]).collect()
    names = [lf.name for lf in pattern_lfs]
    if names and not votes.select(pl.all_horizontal(pl.col(n).is_in(_VOTES) for n in names).all()).item():
        for lf in pattern_lfs:  # one scan for the common case; this loop only names the culprit
            bad = votes.filter(~pl.col(lf.name).is_in(_VOTES))
            if bad.height:
                raise ValueError(
                    f"labeling function {lf.name!r} returned {bad[lf.name][0]} "
                    f"for candidate {bad['candidate_id'][0]}"
                )
    python_lfs = [lf for lf in lfs if isinstance(lf, PythonLF)]
    if python_lfs:
        votes = votes.with_columns(
            pl.Series(lf.name, python_votes(rows, lf), dtype=VOTE_DTYPE) for lf in python_lfs
        )
    snorkel = [lf for lf in lfs if isinstance(lf, SnorkelLF)]
    if snorkel:
        votes = votes.with_columns(
            pl.Series(name, v, dtype=VOTE_DTYPE) for name, v in snorkel_votes(rows, snorkel).items()
        )
    return votes.select("candidate_id", *[lf.name for lf in lfs])


def python_votes(rows: pl.DataFrame, lf: PythonLF) -> np.ndarray:
    """A `python` LF's votes, one call per row; the first row it raises on or votes outside HIGH/LOW/ABSTAIN
    fails the whole application with the function's name, that row's index (0-based) and its candidate id."""
    try:
        fn = lf.resolve()
    except Exception as e:
        raise LabelingFunctionError(
            f"labeling function {lf.name!r}: cannot import {lf.callable} ({type(e).__name__}: {e})", lf.name
        ) from e
    out = np.full(rows.height, ABSTAIN, dtype=np.int8)
    for i, row in enumerate(rows.iter_rows(named=True)):
        if not lf.in_scope(row):
            continue
        cid = row.get("candidate_id")
        try:
            value = fn(row)
        except Exception as e:
            raise LabelingFunctionError(
                f"labeling function {lf.name!r} raised {type(e).__name__}: {e} for candidate {cid} (row {i})",
                lf.name,
                i,
                cid,
            ) from e
        if not _valid_vote(value):
            raise LabelingFunctionError(
                f"labeling function {lf.name!r} returned {value!r} for candidate {cid} (row {i}); "
                "expected 1 (high), 0 (low) or -1 (abstain)",
                lf.name,
                i,
                cid,
            )
        out[i] = int(value)
    return out


def snorkel_votes(rows: pl.DataFrame, lfs: Sequence[SnorkelLF]) -> dict[str, np.ndarray]:
    """The `snorkel` LFs' votes (name → votes), computed as `PandasLFApplier(lfs).apply(rows.to_pandas())`
    computes them: one `DataFrame.apply(axis=1)` pass, each row a pandas Series holding every column, the LFs
    called in order on it (their preprocessors first, their resources as keyword arguments). Unlike the applier,
    a row out of an LF's `task_types` abstains without a call, and the first row an LF raises on or labels
    outside 1/0/-1 fails the application with the LF's name, the row's index (0-based) and its candidate id."""
    fns = []
    for lf in lfs:
        try:
            fns.append(lf.resolve())
        except Exception as e:
            raise LabelingFunctionError(
                f"labeling function {lf.name!r}: cannot import {lf.object} ({type(e).__name__}: {e})", lf.name
            ) from e
    out = {lf.name: np.full(rows.height, ABSTAIN, dtype=np.int8) for lf in lfs}
    if rows.height == 0:  # pandas would call the functions once on an empty Series to guess a result type
        return out
    position = iter(range(rows.height))

    def label(x: Any) -> None:
        i = next(position)
        cid = x.get("candidate_id")
        for lf, fn in zip(lfs, fns, strict=True):
            if not lf.in_scope(x):
                continue
            try:
                value = fn(x)
            except Exception as e:
                raise LabelingFunctionError(
                    f"labeling function {lf.name!r} raised {type(e).__name__}: {e} for candidate {cid} (row {i})",
                    lf.name,
                    i,
                    cid,
                ) from e
            out[lf.name][i] = lf.checked_vote(value, i, cid)

    rows.to_pandas().apply(label, axis=1)
    return out


def snorkel_lfs(lfs: Sequence[Any]) -> list[SnorkelLabelingFunction]:
    """Each LF's `row_vote` as a Snorkel `LabelingFunction` (same name, same order), for Snorkel's appliers."""
    from snorkel.labeling import LabelingFunction as SnorkelLabelingFunction  # heavy import, kept local

    validate_lfs(lfs)
    return [SnorkelLabelingFunction(name=lf.name, f=lf.row_vote) for lf in lfs]


# --- applying every kind -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LFApplication:
    votes: pl.DataFrame  # candidate_id + one Int8 column per LF, in order
    scores: pl.DataFrame  # candidate_id + each model-backed LF's raw score (NaN where out of scope)


def apply_all_lfs(rows: pl.DataFrame, lfs: Sequence[Any], context: LFContext | None = None) -> pl.DataFrame:
    """The label matrix for any mix of kinds (text patterns, python, model-backed), in `lfs` order."""
    return apply_all_lfs_with_scores(rows, lfs, context).votes


def apply_all_lfs_with_scores(
    rows: pl.DataFrame, lfs: Sequence[Any], context: LFContext | None = None
) -> LFApplication:
    """`apply_all_lfs` plus the raw scores behind the model-backed votes (to tune thresholds on)."""
    validate_lfs(lfs)
    context = context or LFContext()
    row_wise = [lf for lf in lfs if not isinstance(lf, _ModelLF)]
    model_lfs = [lf for lf in lfs if isinstance(lf, _ModelLF)]
    votes = apply_lfs(rows, row_wise) if row_wise else rows.select("candidate_id")
    scores = rows.select("candidate_id")
    for lf in model_lfs:
        needed = {"candidate_id", *lf.required_columns} | ({"task_type"} if lf.task_types else set())
        missing = needed - set(rows.columns)
        if missing:
            raise ValueError(f"labeling input lacks columns {sorted(missing)} (needed by {lf.name!r})")
        scope = (
            rows["task_type"].is_in(list(lf.task_types)).fill_null(False).to_numpy()
            if lf.task_types
            else np.ones(rows.height, dtype=bool)
        )
        score = np.full(rows.height, np.nan)
        vote = np.full(rows.height, ABSTAIN, dtype=np.int8)
        if scope.any():
            try:
                s = np.asarray(lf.scores(rows.filter(pl.Series(scope)), context), dtype=np.float64)
            except LabelingFunctionError:
                raise
            except Exception as e:
                raise LabelingFunctionError(
                    f"labeling function {lf.name!r} (kind {lf.kind}) failed: {type(e).__name__}: {e}", lf.name
                ) from e
            score[scope] = s
            vote[scope] = lf.votes_from_scores(s)
        votes = votes.with_columns(pl.Series(lf.name, vote, dtype=VOTE_DTYPE))
        scores = scores.with_columns(pl.Series(lf.name, score, dtype=pl.Float64))
    return LFApplication(votes=votes.select("candidate_id", *[lf.name for lf in lfs]), scores=scores)
