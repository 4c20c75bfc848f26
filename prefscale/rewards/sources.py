"""The recipe's reward sources scoring an iteration's candidates (the `reward_scores` asset, the pair ablation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import polars as pl

from prefscale.rewards.base import REWARD_SCHEMA, ScoringContext, score_rows
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.label_model import label_model_scores
from prefscale.rewards.pairrm_source import pairrm_model_ref, pairrm_source_scores

__all__ = [
    "label_model_rewards",
    "label_model_scores",
    "pairrm_model_ref",
    "pairrm_source_scores",
    "source_scores",
]

NEEDS = {"labels": "the quality labels"}  # the pipeline's words for a missing input


def label_model_rewards(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Reward = P(high) from the label model; `rank` 1 = best within its prompt."""
    return (
        combine_rewards(candidates, {"label_model": label_model_scores(candidates, labels)})
        .select(list(REWARD_SCHEMA))
        .cast(REWARD_SCHEMA)
    )


def source_scores(
    candidates: pl.DataFrame,
    labels: pl.DataFrame | None,
    sources: Sequence[Any],
    *,
    policy_source: str = "embedded",
    seed: int = 0,
    device: str = "cpu",
    reward_model_dir: Any = None,
    compute: Any = None,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame | None]:
    """Each source's (candidate_id, score) for `sources` (`RewardSource`s), and PairRM's matrix rows if any.

    `labels` (quality_labels) serve `label_model`; `reward_model_dir` (a `reward_model` folder) and `compute`
    serve `reward_model`; `pairrm` resolves its ranker with `pairrm_model_ref(model, policy_source)`.
    """
    ctx = ScoringContext(
        labels=labels,
        reward_model_dir=reward_model_dir,
        policy_source=policy_source,
        compute=compute,
        device=device,
        seed=seed,
        needs=NEEDS,
    )
    scores: dict[str, pl.DataFrame] = {}
    matrix = None
    for s in sources:
        out = score_rows(s.source, candidates, replace(ctx, ranker=s.model))
        scores[s.source] = out.scores
        if out.matrix is not None:
            matrix = out.matrix
    return scores, matrix
