"""Reward sources scoring an iteration's candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from prefscale.rewards.base import DEFAULT_PAIRRM, REWARD_SCHEMA, SOURCES, TINY_PAIRRM
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.reward_model import reward_model_scores


def label_model_rewards(candidates: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """Reward = P(high) from the label model; `rank` 1 = best within its prompt."""
    return (
        combine_rewards(candidates, {"label_model": label_model_scores(candidates, labels)})
        .select(list(REWARD_SCHEMA))
        .cast(REWARD_SCHEMA)
    )


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


def pairrm_model_ref(model: str | None, policy_source: str) -> str:
    """The ranker a `pairrm` source uses: its `model`, else the tiny ranker for the embedded policy, else PairRM."""
    if model:
        return model
    return TINY_PAIRRM if policy_source == "embedded" else DEFAULT_PAIRRM


def pairrm_source_scores(
    candidates: pl.DataFrame, model: str, *, device: str = "cpu", seed: int = 0, batch_size: int = 8
) -> pl.DataFrame:
    """PairRM scores (`candidate_id`, `score`, `matrix_index`, `pairrm_logits`) from a ranker or `tiny`.

    `tiny` builds `prefscale.pairrm.build_tiny_ranker(seed=seed)` in a temporary folder: random weights, so it
    checks the code path, not quality.
    """
    import tempfile

    from prefscale.rewards.pairrm import build_tiny_ranker, load_ranker, pairrm_rewards  # lazy: llm-blender

    with tempfile.TemporaryDirectory(prefix="prefscale-pairrm-") as tmp:
        ref = build_tiny_ranker(f"{tmp}/tiny-pairrm", seed=seed) if model == TINY_PAIRRM else model
        blender = load_ranker(ref, device)
        pr = pairrm_rewards(candidates, blender, batch_size=batch_size)
    return pr.select("candidate_id", pl.col("reward").alias("score"), "matrix_index", "pairrm_logits")


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
    scores: dict[str, pl.DataFrame] = {}
    matrix = None
    for s in sources:
        if s.source == "label_model":
            if labels is None:
                raise ValueError("reward source 'label_model' needs the quality labels")
            scores[s.source] = label_model_scores(candidates, labels)
        elif s.source == "reward_model":
            if reward_model_dir is None or compute is None:
                raise ValueError("reward source 'reward_model' needs a trained reward model folder")

            scores[s.source] = reward_model_scores(candidates, reward_model_dir, compute)
        elif s.source == "pairrm":
            model = pairrm_model_ref(s.model, policy_source)
            pr = pairrm_source_scores(candidates, model, device=device, seed=seed)
            scores[s.source] = pr.select("candidate_id", "score")
            matrix = pr.select("candidate_id", "matrix_index", "pairrm_logits")
        else:
            raise ValueError(f"unknown reward source {s.source!r}; known: {', '.join(SOURCES)}")
    return scores, matrix
