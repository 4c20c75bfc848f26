"""Summaries of reward scores for metadata and lineage: statistics, correlations, histograms."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl


def reward_summary(rewards: pl.DataFrame) -> dict[str, float]:
    r = rewards["reward"]
    return {
        "mean": float(r.mean() or 0.0),
        "std": float(r.std() or 0.0),
        "min": float(r.min() or 0.0),
        "max": float(r.max() or 0.0),
    }


def source_correlations(rewards: pl.DataFrame) -> pl.DataFrame:
    """Spearman correlation of each pair of sources' scores (and each with the final reward), over candidates."""
    cols = [c for c in rewards.columns if c.startswith("score_")]
    if "reward" not in cols:
        cols = [*cols, "reward"]
    ranked = rewards.select(pl.col(c).rank("average") for c in cols).to_numpy()
    rows = []
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            x, y = ranked[:, a], ranked[:, b]
            ok = np.isfinite(x) & np.isfinite(y)
            rho = (
                float(np.corrcoef(x[ok], y[ok])[0, 1])
                if ok.sum() > 1 and x[ok].std() and y[ok].std()
                else 0.0
            )
            rows.append((cols[a], cols[b], rho))
    return pl.DataFrame(rows, schema=["a", "b", "spearman"], orient="row")


def distribution_png(rewards: pl.DataFrame, columns: Sequence[str] | None = None, bins: int = 30) -> bytes:
    """A PNG of histograms, one panel per score column and one for the final reward (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(columns) if columns else [c for c in rewards.columns if c.startswith("score_")]
    if len(cols) != 1 and "reward" not in cols:  # one source: the final reward is its score
        cols.append("reward")
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False)
    for ax, col in zip(axes[0], cols, strict=True):
        values = rewards[col].drop_nulls().to_numpy()
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins, color="#4C72B0")
        title = col.removeprefix("score_")
        ax.set_title(title if col != "reward" else "final reward", fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("candidates", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "reward distribution") -> str:
    """Markdown embedding a PNG as a base64 data URI (what Dagster's markdown metadata renders)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def describe_sources(sources: Sequence[Any], ensemble: str) -> str:
    """`label_model`, or e.g. `zscore(label_model×1, pairrm[tiny]×0.5)` for an ensemble (lineage, metadata)."""
    parts = [f"{s.source}[{s.model}]" if getattr(s, "model", None) else s.source for s in sources]
    if len(parts) == 1:
        return parts[0]
    return f"{ensemble}(" + ", ".join(f"{p}×{s.weight:g}" for p, s in zip(parts, sources, strict=True)) + ")"
