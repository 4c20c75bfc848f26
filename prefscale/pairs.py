"""Preference pairs: best vs worst candidate per prompt, in the `prompt/chosen/rejected` format TRL reads."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

UNFINISHED_PENALTY = 1e3  # ranks a sample cut at the token limit below every finished one

PAIR_SCHEMA = {
    "prompt_id": pl.String,
    "prompt": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "chosen": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "rejected": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "chosen_id": pl.String,
    "rejected_id": pl.String,
    "chosen_reward": pl.Float64,
    "rejected_reward": pl.Float64,
    "margin": pl.Float64,
    "length_diff": pl.Int32,
    "rejected_unfinished": pl.Boolean,
}


@dataclass(frozen=True)
class PairSelection:
    pairs: pl.DataFrame
    dropped: pl.DataFrame  # prompt_id, reason


def select_pairs(
    candidates: pl.DataFrame,
    rewards: pl.DataFrame,
    *,
    strategy: str = "best_vs_worst",
    min_margin: float = 1e-6,
    unfinished_is_worst: bool = True,
) -> PairSelection:
    """One (chosen, rejected) pair per prompt; prompts with identical or tied candidates are dropped."""
    if strategy != "best_vs_worst":
        raise ValueError(f"unknown pair strategy {strategy!r}")
    df = candidates.join(rewards.select("candidate_id", "reward"), on="candidate_id", how="inner")
    if df.height != candidates.height:
        raise ValueError(f"{candidates.height - df.height} candidates have no reward score")
    key = pl.col("reward")
    if unfinished_is_worst:
        key = key - pl.when(pl.col("finish_reason") == "length").then(UNFINISHED_PENALTY).otherwise(0.0)
    df = df.with_columns(key.alias("_key"), pl.col("response").str.len_chars().alias("_len"))
    pairs, dropped = [], []
    for (pid,), g in df.sort("prompt_id", "sample_idx").group_by("prompt_id", maintain_order=True):
        if g["response"].n_unique() == 1:
            dropped.append((pid, "identical candidates"))
            continue
        g = g.sort(["_key", "sample_idx"], descending=[True, False])
        best, worst = g.row(0, named=True), g.row(g.height - 1, named=True)
        if best["_key"] - worst["_key"] < min_margin:
            dropped.append((pid, "tied rewards"))
            continue
        if best["response"] == worst["response"]:
            dropped.append((pid, "identical best and worst"))
            continue
        pairs.append(
            {
                "prompt_id": pid,
                "prompt": [{"role": "user", "content": best["prompt"]}],
                "chosen": [{"role": "assistant", "content": best["response"]}],
                "rejected": [{"role": "assistant", "content": worst["response"]}],
                "chosen_id": best["candidate_id"],
                "rejected_id": worst["candidate_id"],
                "chosen_reward": best["reward"],
                "rejected_reward": worst["reward"],
                "margin": best["reward"] - worst["reward"],
                "length_diff": best["_len"] - worst["_len"],
                "rejected_unfinished": worst["finish_reason"] == "length",
            }
        )
    return PairSelection(
        pairs=pl.DataFrame(pairs, schema=PAIR_SCHEMA),
        dropped=pl.DataFrame(dropped, schema={"prompt_id": pl.String, "reason": pl.String}, orient="row"),
    )
