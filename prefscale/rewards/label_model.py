"""The `label_model` reward source: P(high) from the Snorkel label model.

With precomputed quality labels (the pipeline's `quality_labels`) the score is their `p_high`; with labeling
functions and a fitted label model's parameters (online training) the LFs vote on the rows and that model gives
P(high); with labeling functions alone (best-of-N, `prefscale score`'s LF pack) the LFs vote on the rows
themselves and a label model fitted on those votes gives P(high). `tie_break: length` orders rows with the same P(high) by response length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from prefscale.labeling.apply import apply_all_lfs
from prefscale.labeling.label_model import LabelModelResult, fit_label_model, predict_p_high
from prefscale.rewards.base import SCORE_SCHEMA, ScoringContext, SourceScores

LABEL_MODEL_SETTINGS = ("n_epochs", "lr", "l2", "prec_init")  # what `ctx.label_model` passes to the fit


def label_model_scores(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """(candidate_id, score = P(high)) for every candidate; an error names candidates without a label."""
    missing = set(candidates["candidate_id"]) - set(labels["candidate_id"])
    if missing:
        raise ValueError(f"{len(missing)} candidates have no quality label, e.g. {sorted(missing)[:3]}")
    return candidates.select("candidate_id").join(
        labels.select("candidate_id", pl.col("p_high").cast(pl.Float64).alias("score")),
        on="candidate_id",
        how="left",
    )


def fit_on_rows(
    rows: pl.DataFrame, lfs: Sequence[Any], settings: Any = None, seed: int = 0
) -> tuple[pl.DataFrame, LabelModelResult]:
    """(votes, fit): the LFs on `rows` and a label model fitted on those votes (`settings`: n_epochs, lr, l2,
    prec_init; None: the fit's defaults). Model-backed LFs run with a default labeling context: the ones that
    need no model (`consensus`, tfidf `similarity`) as is, the others load theirs by hub id or folder."""
    votes = apply_all_lfs(rows, lfs)
    kwargs = {k: getattr(settings, k) for k in LABEL_MODEL_SETTINGS} if settings is not None else {}
    return votes, fit_label_model(votes, [lf.name for lf in lfs], seed=seed, **kwargs)


def break_ties(scores: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`scores` with equal values ordered by `key` (higher key, higher score), without reordering distinct ones.

    Within each group of equal scores a row moves up by `eps * (rank of its key in the group) / (group size)`,
    with `eps` under half the smallest gap between distinct scores, so the order between groups is unchanged;
    rows with equal keys stay tied.
    """
    scores = np.asarray(scores, dtype=np.float64)
    key = np.asarray(key, dtype=np.float64)
    if len(scores) < 2:
        return scores.copy()
    distinct = np.unique(scores)
    eps = 0.49 * (float(np.min(np.diff(distinct))) if len(distinct) > 1 else 1.0)
    order = np.lexsort((key, scores))  # by score, then key
    s, k = scores[order], key[order]
    starts_group = np.r_[True, s[1:] != s[:-1]]
    group = np.cumsum(starts_group) - 1
    first = np.flatnonzero(starts_group)
    size = np.diff(np.r_[first, len(s)])
    seen = np.cumsum(starts_group | np.r_[True, k[1:] != k[:-1]])  # distinct (score, key) so far
    rank = seen - seen[first[group]]  # dense rank of the key within its group, from 0
    out = np.empty_like(scores)
    out[order] = s + eps * rank / size[group]
    return out


def tie_broken(p_high: np.ndarray, responses: Sequence[str], tie_break: str) -> np.ndarray:
    """`p_high` with ties broken as `tie_break` says: `length` (longer response first) or `none`."""
    if tie_break == "none":
        return p_high
    if tie_break == "length":
        return break_ties(p_high, np.array([len(r) for r in responses], dtype=np.float64))
    raise ValueError(f"unknown tie_break {tie_break!r}; known: length, none")


class LabelModelSource:
    """P(high) from the given quality labels, or from a label model fitted on the rows' LF votes."""

    name = "label_model"

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
        if ctx.labels is not None:
            scores = label_model_scores(rows, ctx.labels)
        elif ctx.lfs and ctx.label_model_params is not None:
            votes = apply_all_lfs(rows, ctx.lfs, ctx.lf_context)
            p_high = predict_p_high(ctx.label_model_params, votes)
            scores = pl.DataFrame(
                {"candidate_id": votes["candidate_id"], "score": p_high}, schema=SCORE_SCHEMA
            )
        elif ctx.lfs:
            _, fit = fit_on_rows(rows, ctx.lfs, ctx.label_model, ctx.seed)
            scores = fit.labels.select("candidate_id", pl.col("p_high").cast(pl.Float64).alias("score"))
        else:
            raise ctx.missing(
                self.name,
                "the quality labels (or labeling functions to fit a label model on the rows)",
                "labels",
                "lfs",
            )
        if ctx.tie_break != "none":
            response = dict(zip(rows["candidate_id"], rows["response"], strict=True))
            broken = tie_broken(
                scores["score"].to_numpy(), [response[c] for c in scores["candidate_id"]], ctx.tie_break
            )
            scores = scores.with_columns(pl.Series("score", broken, dtype=pl.Float64))
        return SourceScores(scores)


LABEL_MODEL = LabelModelSource()
