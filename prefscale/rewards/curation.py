"""The reward-curated SFT subset: the top-quantile candidates in chat format."""

from __future__ import annotations

import math

import polars as pl

SFT_SCHEMA = {
    "prompt_id": pl.String,
    "candidate_id": pl.String,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "reward": pl.Float64,
    "rank": pl.Int32,
}


def curate_sft(
    candidates: pl.DataFrame,
    rewards: pl.DataFrame,
    *,
    top_quantile: float = 0.25,
    scope: str = "global",
    drop_unfinished: bool = True,
    system: str | None = None,
) -> pl.DataFrame:
    """The reward-curated SFT subset (RedPajama-Chat-Curated style): the best `top_quantile` of the candidates.

    Eligible rows: finished samples (unless `drop_unfinished` is off) with a non-empty response, one per distinct
    (prompt, response). They are ordered by reward (ties: the lower candidate_id first) and the first
    `ceil(top_quantile * n)` are kept, over all of them (`scope="global"`) or within each prompt (`per_prompt`,
    at least one per prompt). Rows are in the chat `messages` format SFT trainers read (TRL's `SFTTrainer`):
    `[{"role": "user", ...}, {"role": "assistant", ...}]` (after `{"role": "system", ...}` when `system`, the
    recipe's `policy.system_prompt`, is given), with the reward and its rank within the prompt.
    """
    if not 0 < top_quantile <= 1:
        raise ValueError(f"top_quantile must be in (0, 1], got {top_quantile}")
    if scope not in ("global", "per_prompt"):
        raise ValueError(f"scope must be 'global' or 'per_prompt', got {scope!r}")
    df = candidates.join(rewards.select("candidate_id", "reward", "rank"), on="candidate_id", how="inner")
    if df.height != candidates.height:
        raise ValueError(f"{candidates.height - df.height} candidates have no reward score")
    df = df.filter(pl.col("response").str.strip_chars() != "", pl.col("reward").is_finite())
    if drop_unfinished and "finish_reason" in df.columns:
        df = df.filter(pl.col("finish_reason") != "length")
    df = df.sort(["reward", "candidate_id"], descending=[True, False]).unique(
        ["prompt", "response"], keep="first", maintain_order=True
    )
    if scope == "global":
        kept = df.head(math.ceil(top_quantile * df.height))
    else:
        kept = df.filter(
            pl.int_range(pl.len()).over("prompt_id")
            < (pl.len().over("prompt_id") * top_quantile).ceil().cast(pl.Int64)
        )
    return kept.select(
        "prompt_id",
        "candidate_id",
        pl.concat_list(
            *([pl.struct(pl.lit("system").alias("role"), pl.lit(system).alias("content"))] if system else []),
            pl.struct(pl.lit("user").alias("role"), pl.col("prompt").alias("content")),
            pl.struct(pl.lit("assistant").alias("role"), pl.col("response").alias("content")),
        ).alias("messages"),
        "reward",
        "rank",
    ).cast(SFT_SCHEMA)
