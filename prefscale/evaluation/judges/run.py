"""Running the recipe's judges over every model's comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from prefscale.evaluation.judges.base import Judge
from prefscale.evaluation.judges.metrics import judge_metrics, metrics_frame

# ----------------------------------------------------------------------------------------- running the judges


@dataclass(frozen=True)
class Comparison:
    """One model's outputs against the reference: `pairs` as `prefscale.evaluation.eval_sets` builds them."""

    variant: str  # base | checkpoint | best_of_n
    iteration: int
    model: str  # generator_2
    pairs: pl.DataFrame
    unfinished_rate: float | None = None


def run_judges(
    judges: Sequence[Judge],
    comparisons: Sequence[Comparison],
    *,
    reference: str,
    reference_generator: str,
    source_partition: str,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Every judge on every comparison: ({judge label: annotations with iteration and variant}, metrics table).

    Judge by judge (each model-based judge loads its model once). The metrics table has one row per
    (variant, judge), `METRICS_SCHEMA`, rates on 0-1.
    """
    annotations: dict[str, pl.DataFrame] = {}
    rows = []
    for judge in judges:
        frames = []
        for c in comparisons:
            ann = judge.annotate(c.pairs, generator_1=reference_generator, generator_2=c.model)
            rows.append(
                judge_metrics(
                    ann,
                    iteration=c.iteration,
                    variant=c.variant,
                    model=c.model,
                    reference=reference,
                    source_partition=source_partition,
                    unfinished_rate=c.unfinished_rate,
                )
            )
            frames.append(
                ann.select(
                    pl.lit(c.iteration, pl.Int32).alias("iteration"),
                    pl.lit(c.variant).alias("variant"),
                    pl.all(),
                )
            )
        annotations[judge.label] = pl.concat(frames)
    return annotations, metrics_frame(rows)
