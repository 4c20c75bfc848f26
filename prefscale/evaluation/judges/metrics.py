"""A judge's leaderboard numbers from its annotations, with alpaca_eval's own functions, on a 0-1 scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from prefscale.evaluation.alpaca_metrics import compute_metrics
from prefscale.evaluation.judges.base import ALPACA_COLUMNS

# ---------------------------------------------------------------------------------------------------- metrics

METRICS_SCHEMA = {
    "iteration": pl.Int32,
    "variant": pl.String,  # base | checkpoint | best_of_n
    "model": pl.String,
    "judge": pl.String,
    "annotator": pl.String,
    "reference": pl.String,  # heldout_base | alpaca_eval | file
    "reference_generator": pl.String,
    "win_rate": pl.Float64,  # 0-1 (alpaca_eval's 0-100 / 100), as eval_leaderboard
    "standard_error": pl.Float64,  # 0-1
    "lc_win_rate": pl.Float64,  # 0-1, alpaca_eval's length_controlled_minimal (offline)
    "lc_variant": pl.String,
    "discrete_win_rate": pl.Float64,  # 0-1
    "n_wins": pl.Int32,
    "n_wins_base": pl.Int32,  # the reference won (eval_leaderboard's n_losses)
    "n_draws": pl.Int32,
    "n_total": pl.Int32,
    "n_unparsed": pl.Int32,
    "avg_length": pl.Float64,  # alpaca_eval's int(mean characters of the model outputs)
    "unfinished_rate": pl.Float64,  # share of model outputs cut at the token limit (null when unknown)
    "source_partition": pl.String,  # the alpaca_eval_results partition that computed the row
}


def _scaled(x: Any) -> float | None:
    return None if x is None else float(x) / 100.0


def judge_metrics(
    annotations: pl.DataFrame,
    *,
    iteration: int,
    variant: str,
    model: str,
    reference: str,
    source_partition: str,
    unfinished_rate: float | None = None,
) -> dict[str, Any]:
    """One metrics row (`METRICS_SCHEMA`) of one judge's annotations, through `prefscale.evaluation.alpaca_metrics`.

    alpaca_eval reports rates on 0-100; here they are divided by 100 to match `eval_leaderboard`'s 0-1 scale.
    """

    m = compute_metrics(annotations.select(*ALPACA_COLUMNS).to_pandas())
    return {
        "iteration": iteration,
        "variant": variant,
        "model": model,
        "judge": annotations["judge"][0],
        "annotator": m["annotator"] or annotations["annotator"][0],
        "reference": reference,
        "reference_generator": m["baseline"],
        "win_rate": _scaled(m["win_rate"]),
        "standard_error": _scaled(m["standard_error"]),
        "lc_win_rate": _scaled(m.get("length_controlled_winrate")),
        "lc_variant": m.get("lc_variant"),
        "discrete_win_rate": _scaled(m["discrete_win_rate"]),
        "n_wins": m["n_wins"],
        "n_wins_base": m["n_wins_base"],
        "n_draws": m["n_draws"],
        "n_total": m["n_total"],
        "n_unparsed": m["n_unparsed"],
        "avg_length": float(m["avg_length"]),
        "unfinished_rate": unfinished_rate,
        "source_partition": source_partition,
    }


def metrics_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=METRICS_SCHEMA, orient="row")
