"""Reward scores per candidate (this stage: the label model's P(high quality))."""

from __future__ import annotations

import polars as pl

REWARD_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "source": pl.String,
    "reward": pl.Float64,
    "rank": pl.Int32,
}


def label_model_rewards(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Reward = P(high) from the label model; `rank` 1 = best within its prompt."""
    missing = set(candidates["candidate_id"]) - set(labels["candidate_id"])
    if missing:
        raise ValueError(f"{len(missing)} candidates have no quality label, e.g. {sorted(missing)[:3]}")
    return (
        candidates.select("candidate_id", "prompt_id")
        .join(labels.select("candidate_id", pl.col("p_high").alias("reward")), on="candidate_id", how="left")
        .with_columns(
            pl.lit("label_model").alias("source"),
            pl.col("reward").rank("min", descending=True).over("prompt_id").cast(pl.Int32).alias("rank"),
        )
        .select(list(REWARD_SCHEMA))
        .cast(REWARD_SCHEMA)
    )


def reward_summary(rewards: pl.DataFrame) -> dict[str, float]:
    r = rewards["reward"]
    return {
        "mean": float(r.mean() or 0.0),
        "std": float(r.std() or 0.0),
        "min": float(r.min() or 0.0),
        "max": float(r.max() or 0.0),
    }
