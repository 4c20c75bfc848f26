"""What the blocking asset checks verify, framework-free: pairs against their candidates, checkpoints loadable.

The Dagster assets (`assets/pairs.py`, `assets/checkpoints.py`) turn these results into `AssetCheckResult`s; a
failed blocking check keeps the downstream assets of the same run from executing.
"""

from __future__ import annotations

import polars as pl

from prefscale.pairs.selection import UNFINISHED_PENALTY


def non_positive_margins(
    pairs: pl.DataFrame,
    candidates: pl.DataFrame | None = None,
    *,
    unfinished_is_worst: bool = False,
    length_penalty: float = 0.0,
    length_slope: float = 0.0,
    length_anchor: float | None = None,
) -> pl.DataFrame:
    """Pairs whose chosen side is not ranked above the rejected one: `prompt_id, margin, key_margin`.

    `margin` is the raw reward difference. Pair selection ranks by a key (`prefscale.pairs`): the reward, minus
    `UNFINISHED_PENALTY` for a response cut at the token limit when `unfinished_is_worst`, minus
    `length_penalty` × its length (`length_penalized`), minus `length_slope` × its log(1 + characters)
    (`length_control: regress`: `PairSelection.length_slope`), or with `length_anchor` (`anchored`: the
    `LengthAnchor.log_chars`) `length_slope` × the part of it above the anchor. So a finished response may be
    chosen over an unfinished one, or a shorter one over a longer one, with a higher raw reward. `key_margin` is the margin on
    that key; it must be > 0 (NaN fails). Each side's finish reason comes from `candidates` when given, else the
    rejected side's from the pairs' `rejected_unfinished` (and the chosen side counts as finished).
    """
    if "margin" not in pairs.columns:
        raise ValueError(f"preference pairs have no 'margin' column (columns: {', '.join(pairs.columns)})")
    df = pairs.with_columns(pl.col("margin").cast(pl.Float64))
    if candidates is not None:
        unfinished = candidates.select("candidate_id", (pl.col("finish_reason") == "length").alias("_u"))
        for side in ("chosen", "rejected"):
            df = df.join(
                unfinished.rename({"candidate_id": f"{side}_id", "_u": f"_{side}_u"}),
                on=f"{side}_id",
                how="left",
            )
    else:
        df = df.with_columns(
            pl.lit(False).alias("_chosen_u"), pl.col("rejected_unfinished").alias("_rejected_u")
        )
    key = pl.col("margin")
    if unfinished_is_worst:
        u = pl.col("_chosen_u").fill_null(False).cast(pl.Float64) - pl.col("_rejected_u").fill_null(
            False
        ).cast(pl.Float64)
        key = key - UNFINISHED_PENALTY * u
    if length_penalty:
        key = key - length_penalty * pl.col("length_diff").cast(pl.Float64)
    if length_slope:
        log_len = {
            s: pl.col(s).list.last().struct.field("content").str.len_chars().cast(pl.Float64).log1p()
            for s in ("chosen", "rejected")
        }
        if length_anchor is not None:
            log_len = {s: (e - length_anchor).clip(lower_bound=0.0) for s, e in log_len.items()}
        key = key - length_slope * (log_len["chosen"] - log_len["rejected"])
    return (
        df.with_columns(key.alias("key_margin"))
        .filter(~(pl.col("key_margin") > 0).fill_null(False) | pl.col("key_margin").is_nan())
        .select("prompt_id", "margin", "key_margin")
    )


def unknown_candidate_refs(pairs: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Pair sides that do not point at a candidate of the same prompt with the same response.

    One row per bad side: `prompt_id, side (chosen|rejected), candidate_id, problem`, where problem is
    `unknown candidate_id`, `candidate of another prompt` or `response differs from the candidate's`.
    """
    cands = candidates.select(
        "candidate_id", pl.col("prompt_id").alias("_cand_prompt"), pl.col("response").alias("_cand_response")
    )
    rows = []
    for side in ("chosen", "rejected"):
        sides = pairs.select(
            "prompt_id",
            pl.lit(side).alias("side"),
            pl.col(f"{side}_id").alias("candidate_id"),
            pl.col(side).list.last().struct.field("content").alias("_text"),
        )
        rows.append(
            sides.join(cands, on="candidate_id", how="left")
            .with_columns(
                pl.when(pl.col("_cand_prompt").is_null())
                .then(pl.lit("unknown candidate_id"))
                .when(pl.col("_cand_prompt") != pl.col("prompt_id"))
                .then(pl.lit("candidate of another prompt"))
                .when(pl.col("_cand_response") != pl.col("_text"))
                .then(pl.lit("response differs from the candidate's"))
                .otherwise(None)
                .alias("problem")
            )
            .filter(pl.col("problem").is_not_null())
            .select("prompt_id", "side", "candidate_id", "problem")
        )
    return pl.concat(rows).sort("prompt_id", "side")
