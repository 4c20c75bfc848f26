"""MLflow lineage and plots for the AlpacaEval-style results (`alpaca_eval_results`).

Kept apart from `prefscale.lineage` (the training runs) on purpose; it reuses that module's public helpers only.
One MLflow run per materialization, named `alpaca_eval-<iteration>`, in the same experiment as the DPO runs,
holding the judges' metrics, the plot and the metrics table as artifacts, tagged with the Dagster run.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.lineage.mlflow_runs import mlflow_client, open_run
from prefscale.report import line_chart_markdown

RUN_PREFIX = "alpaca_eval-"
KIND_TAG = "prefscale.kind"
KIND = "alpaca_eval"


def log_eval_run(
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    *,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    files: Mapping[str, bytes] | None = None,
) -> str:
    """Log a finished evaluation run (params, metrics, tags, files as artifacts); return its run id."""
    from mlflow.entities import Metric, Param, RunTag

    all_tags = {KIND_TAG: KIND, **tags}
    with open_run(tracking_uri, experiment, artifact_root, run_name, all_tags) as (client, run_id):
        client.log_batch(
            run_id,
            metrics=[Metric(_key(k), float(v), 0, 0) for k, v in metrics.items() if v is not None],
            params=[Param(_key(k), str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in all_tags.items()],
        )
        if files:
            with tempfile.TemporaryDirectory(prefix="prefscale-eval-run-") as tmp:
                for name, data in files.items():
                    path = Path(tmp) / name
                    path.write_bytes(data)
                    client.log_artifact(run_id, str(path))
    return run_id


def _key(k: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in k)


def eval_runs(tracking_uri: str, experiment: str) -> list[Any]:
    """The active `alpaca_eval-*` runs of the experiment (newest first)."""
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{KIND_TAG}` = '{KIND}'", order_by=["start_time DESC"]
    )


def metrics_json(metrics: pl.DataFrame) -> bytes:
    return (json.dumps(metrics.to_dicts(), indent=2, sort_keys=True, default=str) + "\n").encode()


def results_png(metrics: pl.DataFrame, title: str = "alpaca_eval_results") -> bytes:
    """Win rate, LC win rate (0-1) and average length (characters) per iteration, one line per judge (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("win_rate", "win rate vs reference"),
        ("lc_win_rate", "LC win rate (minimal GLM)"),
        ("avg_length", "avg length (chars)"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.0), squeeze=False)
    data = metrics.sort("judge", "iteration")
    judges = data["judge"].unique(maintain_order=True).to_list()
    for ax, (col, label) in zip(axes[0], panels, strict=True):
        for judge in judges:
            d = data.filter(pl.col("judge") == judge).drop_nulls(col)
            if d.height:
                ax.plot(d["iteration"].to_list(), d[col].to_list(), marker="o", label=judge)
        if col != "avg_length":
            ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle="--")
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        iters = sorted(set(data["iteration"].to_list()))
        ax.set_xticks(iters)
        ax.tick_params(labelsize=7)
    if judges:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def results_preview(metrics: pl.DataFrame) -> str:
    """The win rate per iteration, one line per judge, as a markdown SVG small enough for the Dagster UI to show
    in place (`prefscale.report.line_chart_markdown`); "" when it would not fit (the PNG stays the full plot)."""
    series = {
        judge: [
            (float(it), float(w))
            for it, w in metrics.filter(pl.col("judge") == judge).select("iteration", "win_rate").rows()
            if w is not None
        ]
        for judge in metrics["judge"].unique(maintain_order=True).to_list()
    }
    return line_chart_markdown(
        series, "win rate vs reference per iteration, 0-1", y_range=(0.0, 1.0), hline=0.5
    )


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown embedding a PNG as a base64 data URI (what Dagster's markdown metadata renders)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def flat_metrics(metrics: pl.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """`<variant>.<judge>.<column>` -> value, for MLflow (nulls left out)."""
    out = {}
    for row in metrics.iter_rows(named=True):
        for c in columns:
            if row.get(c) is not None:
                out[f"{row['variant']}.{row['judge']}.{c}"] = float(row[c])
    return out
