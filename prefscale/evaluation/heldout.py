"""Held-out evaluation: SME-preference adherence, length, and rubric-judge win rate against the base."""

from __future__ import annotations

import polars as pl

from prefscale.evaluation import rubric

EVAL_SEED = 424242  # the held-out sampling seed, the same for every model: differences come from the weights

LEADERBOARD_SCHEMA = {
    "iteration": pl.Int32,
    "model": pl.String,
    "judge": pl.String,
    "win_rate": pl.Float64,
    "n_wins": pl.Int32,
    "n_losses": pl.Int32,
    "n_draws": pl.Int32,
    "n_total": pl.Int32,
    "avg_length": pl.Float64,
    "mean_adherence": pl.Float64,
    "finished_adherence": pl.Float64,
    "mean_rubric_score": pl.Float64,
    "unfinished_rate": pl.Float64,
    **{f"adherence_{p}": pl.Float64 for p in rubric.PREFERENCES},
}
ADHERENCE_SCHEMA = {"iteration": pl.Int32, "model": pl.String, "preference": pl.String, "rate": pl.Float64}


def _triples(samples: pl.DataFrame) -> list[tuple[str, str, bool]]:
    s = samples.sort("prompt_id", "sample_idx")
    return [
        (r, t, f == "stop") for r, t, f in zip(s["response"], s["task_type"], s["finish_reason"], strict=True)
    ]


def adherence(samples: pl.DataFrame) -> dict[str, float]:
    """Share of responses satisfying each SME preference (the rubric's detectors)."""
    dets = [rubric.detect(r) for r in samples["response"]]
    n = max(1, len(dets))
    return {p: sum(d[p] for d in dets) / n for p in rubric.PREFERENCES}


def evaluate(
    samples: pl.DataFrame,
    baseline: pl.DataFrame,
    *,
    iteration: int,
    model: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(leaderboard row, adherence rows) for `samples` judged against `baseline` on the same prompts.

    The row also carries each preference's rate as an `adherence_<preference>` column.
    """
    keys = ["prompt_id", "sample_idx"]
    if samples.select(keys).sort(keys).to_dicts() != baseline.select(keys).sort(keys).to_dicts():
        raise ValueError("evaluation samples and baseline samples cover different (prompt_id, sample_idx)")
    wr, wins, losses, draws = rubric.win_rate(_triples(samples), _triples(baseline))
    rates = adherence(samples)
    finished = samples.filter(pl.col("finish_reason") == "stop")
    done = adherence(finished) if finished.height else {}
    scores = [rubric.score(r, t, f) for r, t, f in _triples(samples)]
    row = pl.DataFrame(
        {
            "iteration": [iteration],
            "model": [model],
            "judge": ["sme_rubric"],
            "win_rate": [wr],
            "n_wins": [wins],
            "n_losses": [losses],
            "n_draws": [draws],
            "n_total": [wins + losses + draws],
            "avg_length": [float(samples["response"].str.len_chars().mean() or 0.0)],
            "mean_adherence": [sum(rates.values()) / len(rates)],
            # adherence of the samples that ended on their own: a gain here is not "stopped getting cut off"
            "finished_adherence": [sum(done.values()) / len(done) if done else None],
            "mean_rubric_score": [sum(scores) / max(1, len(scores))],
            "unfinished_rate": [float((samples["finish_reason"] == "length").mean() or 0.0)],
            **{f"adherence_{p}": [rate] for p, rate in rates.items()},
        },
        schema=LEADERBOARD_SCHEMA,
    )
    adh = pl.DataFrame(
        {
            "iteration": [iteration] * len(rates),
            "model": [model] * len(rates),
            "preference": list(rates),
            "rate": list(rates.values()),
        },
        schema=ADHERENCE_SCHEMA,
    )
    return row, adh
