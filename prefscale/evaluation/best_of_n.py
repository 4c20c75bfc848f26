"""Best-of-N at inference: N samples per evaluation slot, the best kept by a reward source.

The held-out evaluation draws `S = evaluation.samples_per_prompt` samples per prompt (slots 0..S-1) and pairs
slot `s` with the base's sample `s`. Best-of-N draws `S·N` samples per prompt with the evaluation seed and gives
slot `s` the samples `s, s + S, s + 2S, ...` (N of them), so each slot's pool holds the plain evaluation's
sample `s` (same seed, same text with the transformers backend) plus N−1 more: best-of-N differs from the plain
checkpoint only by the choice. The reward sources are those of `prefscale.rewards.registry`, for example:

- `label_model`: the recipe's row labeling functions on the pool, a Snorkel label model fitted on them, P(high);
- `reward_model`: the weak-supervision reward model (`prefscale.reward_model`);
- `pairrm`: llm-blender's PairRM rank score within the slot's pool.

Ties go to the lowest sample index (the plain sample when it is among the best).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.rewards.base import ScoringContext, score_rows

SELECTED_EXTRA = {"chosen_sample": pl.Int32, "reward": pl.Float64, "pool_size": pl.Int32}
NEEDS = {  # best-of-N's words for a missing input
    "lfs": "the recipe's labeling functions",
    "group_by": "the pool's slot column (see pool_with_slots)",
}


def generator_name(iteration: int, n: int) -> str:
    """The leaderboard's name of a best-of-N variant, e.g. `dpo-iter2+bo4`."""
    return f"dpo-iter{iteration}+bo{n}"


def slot_of(sample_idx: pl.Expr, slots: int) -> pl.Expr:
    """The evaluation slot a pool sample belongs to: `sample_idx mod S`."""
    return (sample_idx % slots).cast(pl.Int32)


def pool_with_slots(pool: pl.DataFrame, slots: int) -> pl.DataFrame:
    """The pool (S·N samples per prompt) with its `slot` column; each slot must hold the same number of samples."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    out = pool.with_columns(slot_of(pl.col("sample_idx"), slots).alias("slot"))
    sizes = out.group_by("prompt_id", "slot").len()["len"]
    if sizes.n_unique() > 1:
        raise ValueError(f"uneven best-of-N pools: slot sizes {sorted(set(sizes.to_list()))}")
    return out


def score_pool(
    pool: pl.DataFrame,
    source: str,
    *,
    lfs: Sequence[Any] = (),
    label_model: Any = None,
    seed: int = 0,
    reward_model_dir: Any = None,
    compute: Any = None,
    pairrm_model: str | None = None,
    device: str = "cpu",
) -> pl.DataFrame:
    """(candidate_id, score) for every pool sample by the registered `source` (higher is better).

    `lfs` and `label_model` (settings) fit `label_model` on the pool itself; `reward_model_dir` and `compute`
    serve `reward_model`; `pairrm_model` is PairRM's ranker, which compares the samples of one slot's pool.
    """
    ctx = ScoringContext(
        lfs=tuple(lfs),
        label_model=label_model,
        reward_model_dir=reward_model_dir,
        ranker=pairrm_model,
        policy_source=None,  # the asset resolves the ranker (pairrm_model_ref): no default here
        compute=compute,
        device=device,
        seed=seed,
        group_by=("prompt_id", "slot"),
        kind="best-of-N source",
        needs=NEEDS,
    )
    return score_rows(source, pool, ctx).scores


def select_best(pool: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """One sample per (prompt, slot): the highest score, ties to the lowest sample index.

    Returns the `CANDIDATE_SCHEMA` columns with `sample_idx` = the slot (so it pairs with the base's sample of
    that slot) and `candidate_id` `<prompt_id>-<slot>`, plus `chosen_sample` (the pool index kept), its
    `reward` and the `pool_size`.
    """
    if "slot" not in pool.columns:
        raise ValueError("the pool lacks its slot column (see pool_with_slots)")
    missing = set(pool["candidate_id"]) - set(scores["candidate_id"])
    if missing:
        raise ValueError(f"{len(missing)} pool samples have no score, e.g. {sorted(missing)[:3]}")
    scored = pool.join(scores.select("candidate_id", pl.col("score").cast(pl.Float64)), on="candidate_id")
    bad = scored.filter(~pl.col("score").is_finite())
    if bad.height:
        raise ValueError(f"{bad.height} pool samples have a non-finite score, e.g. {bad['candidate_id'][0]}")
    best = (
        scored.sort(["prompt_id", "slot", "score", "sample_idx"], descending=[False, False, True, False])
        .group_by("prompt_id", "slot", maintain_order=True)
        .agg(pl.all().first(), pl.len().alias("pool_size"))
    )
    return (
        best.select(
            pl.format("{}-{}", "prompt_id", "slot").alias("candidate_id"),
            "prompt_id",
            pl.col("slot").alias("sample_idx"),
            *[c for c in CANDIDATE_SCHEMA if c not in ("candidate_id", "prompt_id", "sample_idx")],
            pl.col("sample_idx").alias("chosen_sample"),
            pl.col("score").alias("reward"),
            "pool_size",
        )
        .cast({**CANDIDATE_SCHEMA, **SELECTED_EXTRA})
        .sort("prompt_id", "sample_idx")
    )


def selection_summary(selected: pl.DataFrame, slots: int) -> dict[str, float]:
    """How often the plain sample (pool index = slot) was kept, and the mean kept reward."""
    plain = (selected["chosen_sample"] == selected["sample_idx"]).mean() if selected.height else 0.0
    return {
        "kept_plain_sample_rate": float(plain or 0.0),
        "mean_reward_kept": float(selected["reward"].mean() or 0.0),
        "slots": float(slots),
    }
