"""Rewards for plain (prompt, response) rows, with no pipeline around them (`prefscale score`, the LF pack's benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefscale.compute import resolve_compute
from prefscale.config.labeling import LFPack, load_lf_pack
from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.label_model import fit_label_model
from prefscale.rewards.reward_model import score_texts
from prefscale.rewards.sources import pairrm_source_scores

SCORE_SOURCES = ("label_model", "reward_model", "pairrm")


# --- scoring ------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class LabelModelScores:
    rewards: np.ndarray  # P(high) per row, ties broken as the pack says
    p_high: np.ndarray  # the label model's P(high) as fitted
    votes: pl.DataFrame  # the label matrix (one column per LF)
    task_types: list[str]
    weights: dict[str, float]  # estimated LF accuracies


def label_model_scores(
    prompts: Sequence[str],
    responses: Sequence[str],
    pack: LFPack,
    *,
    finish_reasons: Sequence[str | None] | None = None,
    seed: int = 0,
) -> LabelModelScores:
    """The pack's LFs on every row, and the label model fitted on those votes: P(high) per row."""

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    task_types = pack.task_type_of(prompts)
    rows = pl.DataFrame(
        {
            "candidate_id": [str(i) for i in range(len(prompts))],
            "prompt": list(prompts),
            "response": list(responses),
            "task_type": task_types,
            "finish_reason": list(finish_reasons) if finish_reasons is not None else [None] * len(prompts),
        },
        schema={
            "candidate_id": pl.String,
            "prompt": pl.String,
            "response": pl.String,
            "task_type": pl.String,
            "finish_reason": pl.String,
        },
    )
    votes = apply_lfs(rows, pack.functions)
    names = [lf.name for lf in pack.functions]
    lm = pack.label_model
    res = fit_label_model(
        votes, names, n_epochs=lm.n_epochs, lr=lm.lr, l2=lm.l2, prec_init=lm.prec_init, seed=seed
    )
    p_high = res.labels["p_high"].to_numpy().astype(np.float64)
    rewards = p_high
    if pack.tie_break == "length":
        rewards = break_ties(p_high, np.array([len(r) for r in responses], dtype=np.float64))
    return LabelModelScores(
        rewards=rewards,
        p_high=p_high,
        votes=votes,
        task_types=task_types,
        weights=res.weights,
    )


def pairrm_scores_by_prompt(
    prompts: Sequence[str], responses: Sequence[str], model: str, *, device: str = "cpu", seed: int = 0
) -> np.ndarray:
    """PairRM rank scores, comparing the rows that share a prompt; 0 for a prompt with one row."""

    ids = [str(i) for i in range(len(prompts))]
    frame = pl.DataFrame({"candidate_id": ids, "prompt": list(prompts), "response": list(responses)})
    counts = frame.group_by("prompt").len()
    frame = frame.join(counts, on="prompt").with_columns(
        pl.col("prompt").rank("dense").cast(pl.String).alias("prompt_id")
    )
    out = np.zeros(len(prompts), dtype=np.float64)
    multi = frame.filter(pl.col("len") > 1)
    if multi.height:
        scored = pairrm_source_scores(multi, model, device=device, seed=seed)
        for cid, s in zip(scored["candidate_id"], scored["score"], strict=True):
            out[int(cid)] = s
    return out


def score_pairs(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    source: str = "label_model",
    pack: LFPack | None = None,
    model: str | None = None,
    finish_reasons: Sequence[str | None] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A reward per (prompt, response) from `source` (see the module docstring); higher is better."""
    if source == "label_model":
        return label_model_scores(
            prompts, responses, pack or load_lf_pack(), finish_reasons=finish_reasons, seed=seed
        ).rewards
    if source == "reward_model":
        if not model:
            raise ValueError("--reward reward_model needs --model: a reward model folder")

        return score_texts(model, list(prompts), list(responses), resolve_compute("auto"))
    if source == "pairrm":
        return pairrm_scores_by_prompt(
            prompts,
            responses,
            model or "llm-blender/PairRM",
            device=resolve_compute("auto").device,
            seed=seed,
        )
    raise ValueError(f"unknown reward source {source!r}; known: {', '.join(SCORE_SOURCES)}")
