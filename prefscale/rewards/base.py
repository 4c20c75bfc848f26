"""Reward frames and source names shared by every reward source."""

from __future__ import annotations

import polars as pl

REWARD_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "source": pl.String,
    "reward": pl.Float64,
    "rank": pl.Int32,
}
SOURCES = ("label_model", "reward_model", "pairrm")
ENSEMBLES = ("zscore", "rank", "none")
ENSEMBLE_SOURCE = "ensemble"
TINY_PAIRRM = (
    "tiny"  # `model: tiny`: a random tiny ranker built on the fly (code-path check, not a quality source)
)
DEFAULT_PAIRRM = "llm-blender/PairRM"


def score_column(source: str) -> str:
    return f"score_{source}"
