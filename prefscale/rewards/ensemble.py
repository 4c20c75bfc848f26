"""Several reward sources combined: per-prompt normalisation and a weighted mean."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from prefscale.rewards.base import ENSEMBLE_SOURCE, ENSEMBLES, REWARD_SCHEMA, score_column


def _normalised(col: str, ensemble: str) -> pl.Expr:
    c = pl.col(col)
    if ensemble == "none":
        return c
    if ensemble == "zscore":
        std = c.std(ddof=0).over("prompt_id")
        return pl.when(std > 0).then((c - c.mean().over("prompt_id")) / std).otherwise(0.0)
    n = pl.len().over("prompt_id")
    return pl.when(n > 1).then((c.rank("average").over("prompt_id") - 1) / (n - 1)).otherwise(0.5)


def combine_rewards(
    candidates: pl.DataFrame,
    scores: Mapping[str, pl.DataFrame],
    weights: Mapping[str, float] | None = None,
    ensemble: str = "zscore",
) -> pl.DataFrame:
    """The reward frame: `REWARD_SCHEMA` plus one `score_<source>` column per source (see the module docstring).

    `scores[source]` holds `candidate_id` and `score` for every candidate; `weights` default to 1 each. One
    source: reward = its raw score. Several: the weighted mean of the per-prompt normalised scores.
    """
    if not scores:
        raise ValueError("at least one reward source is required")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; known: {', '.join(ENSEMBLES)}")
    weights = {s: 1.0 for s in scores} if weights is None else dict(weights)
    if set(weights) != set(scores):
        raise ValueError(f"weights for {sorted(weights)} but scores for {sorted(scores)}")
    if any(not w > 0 for w in weights.values()):
        raise ValueError(f"reward weights must be > 0, got {weights}")
    df = candidates.select("candidate_id", "prompt_id")
    for source, s in scores.items():
        if s["candidate_id"].is_duplicated().any():
            raise ValueError(f"source {source!r} scores some candidates more than once")
        missing = set(df["candidate_id"]) - set(s["candidate_id"])
        if missing:
            raise ValueError(
                f"source {source!r}: {len(missing)} candidates have no score, e.g. {sorted(missing)[:3]}"
            )
        df = df.join(
            s.select("candidate_id", pl.col("score").cast(pl.Float64).alias(score_column(source))),
            on="candidate_id",
            how="left",
        )
    names = list(scores)
    if len(names) == 1:
        reward = pl.col(score_column(names[0]))
        label = names[0]
    else:
        total = sum(weights.values())
        reward = pl.sum_horizontal(
            [_normalised(score_column(n), ensemble) * (weights[n] / total) for n in names]
        )
        label = ENSEMBLE_SOURCE
    return (
        df.with_columns(reward.cast(pl.Float64).alias("reward"), pl.lit(label).alias("source"))
        .with_columns(
            pl.col("reward").rank("min", descending=True).over("prompt_id").cast(pl.Int32).alias("rank")
        )
        .select(*REWARD_SCHEMA, *[score_column(n) for n in names])
        .cast(REWARD_SCHEMA)
    )
