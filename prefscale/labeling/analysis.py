"""LF analysis: catalog, coverage, overlap, conflict, polarity, accuracy, correlation with response length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from prefscale.labeling.length import lf_length_correlations
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW


def lf_catalog(lfs: Sequence[Any]) -> pl.DataFrame:
    """Name, kind, version, vote and description of each LF (for lineage and the UI)."""
    return pl.DataFrame(
        {
            "lf_name": [lf.name for lf in lfs],
            "kind": [lf.kind for lf in lfs],
            "version": [lf.version for lf in lfs],
            "vote": [lf.vote_label for lf in lfs],
            "description": [lf.description for lf in lfs],
        }
    )


@dataclass(frozen=True)
class CatalogEntry:
    """An LF as a version's `functions` table recorded it (what `lf_analysis` needs of an LF)."""

    name: str
    version: str
    kind: str


def catalog_entries(catalog: pl.DataFrame) -> list[CatalogEntry]:
    """The LFs of an `lf_catalog` table, as they were when the label matrix was made."""
    return [CatalogEntry(r["lf_name"], r["version"], r["kind"]) for r in catalog.iter_rows(named=True)]


def lf_summary(votes: pl.DataFrame, lf_names: Sequence[str]) -> pl.DataFrame:
    """Coverage, overlap and conflict per LF (Snorkel's LFAnalysis definitions), vectorised."""
    n = max(votes.height, 1)
    mat = votes.select(lf_names).to_numpy()
    active = mat != ABSTAIN
    n_active = active.sum(axis=1)
    has_high = (mat == HIGH).any(axis=1)
    has_low = (mat == LOW).any(axis=1)
    rows = []
    for j, name in enumerate(lf_names):
        col = active[:, j]
        conflict = col & has_high & has_low  # binary labels: j disagrees with someone on these rows
        rows.append(
            {
                "lf_name": name,
                "polarity": sorted({int(v) for v in mat[col, j]}),
                "coverage": float(col.sum() / n),
                "overlaps": float((col & (n_active > 1)).sum() / n),
                "conflicts": float(conflict.sum() / n),
            }
        )
    return pl.DataFrame(rows)


def lf_analysis(
    votes: pl.DataFrame,
    lfs: Sequence[Any],
    gold: pl.DataFrame | None = None,
    estimated_accuracy: Mapping[str, float] | None = None,
    lengths: pl.DataFrame | None = None,
    gold_actions: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Per-LF analysis: `lf_summary` (polarity, coverage, overlaps, conflicts) plus the LF's version and kind,
    the label model's estimated accuracy when given, its empirical accuracy against SME gold, and its
    `length_correlation` with response length when `lengths` (`candidate_id`, `response_chars`) is given
    (`prefscale.labeling.length.lf_length_correlations`; null otherwise).

    `gold` has `candidate_id` and `label` (HIGH/LOW) for the rows SMEs judged; an LF's empirical accuracy is its
    correct votes over its non-abstain votes on those rows (Snorkel's `lf_empirical_accuracies` restricted to
    gold rows), null when it voted on none of them (Snorkel would report 0). With `gold_actions` (LF name → what
    gold did to it, `prefscale.labeling.gold_filter`) a `gold_action` column says so (null: nothing).
    """
    names = [lf.name for lf in lfs]
    summary = lf_summary(votes, names)
    n_gold, correct, incorrect = gold_vote_counts(votes, names, gold)
    est = estimated_accuracy or {}
    out = summary.select(
        pl.col("lf_name"),
        pl.Series("lf_version", [lf.version for lf in lfs], dtype=pl.String),
        pl.Series("kind", [lf.kind for lf in lfs], dtype=pl.String),
        pl.col("polarity").list.eval(pl.element().cast(pl.String)).list.join(",").alias("polarity"),
        "coverage",
        "overlaps",
        "conflicts",
        pl.Series("estimated_accuracy", [est.get(n) for n in names], dtype=pl.Float64),
        pl.Series("n_gold", n_gold, dtype=pl.Int64),
        pl.Series("gold_correct", correct, dtype=pl.Int64),
        pl.Series("gold_incorrect", incorrect, dtype=pl.Int64),
    ).with_columns(
        pl.when(pl.col("gold_correct") + pl.col("gold_incorrect") > 0)
        .then(pl.col("gold_correct") / (pl.col("gold_correct") + pl.col("gold_incorrect")))
        .otherwise(None)
        .alias("empirical_accuracy"),
        pl.Series("length_correlation", lf_length_correlations(votes, names, lengths), dtype=pl.Float64),
    )
    if gold_actions is None:
        return out
    return out.with_columns(pl.Series("gold_action", [gold_actions.get(n) for n in names], dtype=pl.String))


def gold_vote_counts(
    votes: pl.DataFrame, names: Sequence[str], gold: pl.DataFrame | None
) -> tuple[list[int], list[int], list[int]]:
    """Per LF: the iteration's gold rows (those in `votes`), and its correct and incorrect votes on them."""
    if gold is None or not gold.height:
        return [0] * len(names), [0] * len(names), [0] * len(names)
    joined = votes.select("candidate_id", *names).join(
        gold.select("candidate_id", pl.col("label").cast(pl.Int8).alias("__gold")), on="candidate_id"
    )
    mat = joined.select(names).to_numpy()
    y = joined["__gold"].to_numpy()[:, None]
    active = mat != ABSTAIN
    correct = (active & (mat == y)).sum(axis=0).tolist()
    incorrect = (active & (mat != y)).sum(axis=0).tolist()
    return [joined.height] * len(names), correct, incorrect
