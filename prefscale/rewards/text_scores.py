"""Rewards for plain (prompt, response) rows, with no pipeline around them (`prefscale score`, the LF pack's benchmarks).

Rows get `candidate_id` = their position and `prompt_id` = one per distinct prompt text (PairRM compares the rows
that share a prompt); the LF pack gives their task types, its LFs and label-model settings, and its tie-break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefscale.config.labeling import LFPack, load_lf_pack
from prefscale.labeling.reference_kind import REFERENCE_COLUMN
from prefscale.rewards.base import ScoringContext, score_rows
from prefscale.rewards.label_model import break_ties, fit_on_rows, tie_broken

__all__ = ["LabelModelScores", "break_ties", "label_model_scores", "score_pairs", "text_rows"]

# the CLI's words for a missing input
NEEDS = {
    "reward_model_dir": "--model: a reward model folder",
    "ranker": "--model: a PairRM hub id, ranker folder or 'tiny'",
}


def text_rows(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    task_types: Sequence[str] | None = None,
    finish_reasons: Sequence[str | None] | None = None,
    references: Sequence[str | None] | None = None,
) -> pl.DataFrame:
    """The rows a reward source scores: candidate_id (the position), prompt, response, task_type, finish_reason,
    prompt_id (the dense rank of the prompt text), and `reference` (a reference answer per row; null where there
    is none) when `references` is given."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if references is not None and len(references) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(references)} references")
    n = len(prompts)
    rows = pl.DataFrame(
        {
            "candidate_id": [str(i) for i in range(n)],
            "prompt": list(prompts),
            "response": list(responses),
            "task_type": list(task_types) if task_types is not None else [None] * n,
            "finish_reason": list(finish_reasons) if finish_reasons is not None else [None] * n,
        },
        schema={
            "candidate_id": pl.String,
            "prompt": pl.String,
            "response": pl.String,
            "task_type": pl.String,
            "finish_reason": pl.String,
        },
    ).with_columns(pl.col("prompt").rank("dense").cast(pl.String).alias("prompt_id"))
    if references is None:
        return rows
    return rows.with_columns(pl.Series(REFERENCE_COLUMN, list(references), dtype=pl.String))


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
    references: Sequence[str | None] | None = None,
    seed: int = 0,
) -> LabelModelScores:
    """The pack's LFs on every row, and the label model fitted on those votes: P(high) per row, with the votes
    and the LF weights (`score_pairs` gives the rewards alone)."""
    task_types = pack.task_type_of(prompts)
    rows = text_rows(
        prompts, responses, task_types=task_types, finish_reasons=finish_reasons, references=references
    )
    votes, res = fit_on_rows(rows, pack.functions, pack.label_model, seed)
    p_high = res.labels["p_high"].to_numpy().astype(np.float64)
    return LabelModelScores(
        rewards=tie_broken(p_high, list(responses), pack.tie_break),
        p_high=p_high,
        votes=votes,
        task_types=task_types,
        weights=res.weights,
    )


def score_pairs(
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    source: str = "label_model",
    pack: LFPack | None = None,
    model: str | None = None,
    finish_reasons: Sequence[str | None] | None = None,
    references: Sequence[str | None] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A reward per (prompt, response) from the registered `source`, higher is better.

    `pack` (default: the generic LF pack) serves `label_model`; `model` is the reward model folder of
    `reward_model` and the ranker of `pairrm` (default `llm-blender/PairRM`). `references` (a reference answer
    per row, or None) feed the pack's `reference` functions. Models run on the GPU if there is one.
    """
    lf_pack = pack or load_lf_pack()
    rows = text_rows(
        prompts,
        responses,
        task_types=lf_pack.task_type_of(prompts),
        finish_reasons=finish_reasons,
        references=references,
    )
    ctx = ScoringContext(
        lfs=lf_pack.functions,
        label_model=lf_pack.label_model,
        tie_break=lf_pack.tie_break,
        reward_model_dir=model or None,
        ranker=model or None,
        policy_source="pretrained",  # plain rows: the real PairRM unless `model` names another ranker
        device="auto",
        seed=seed,
        needs=NEEDS,
    )
    scores = score_rows(source, rows, ctx).scores
    out = np.empty(rows.height, dtype=np.float64)
    out[scores["candidate_id"].cast(pl.Int64).to_numpy()] = scores["score"].to_numpy()
    return out
