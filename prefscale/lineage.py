"""MLflow lineage: one run per DPO checkpoint, tagged back to the Dagster run, partition and inputs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def tracking_uri_for(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _client(tracking_uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """Experiment id, creating it with an explicit artifact location under `artifact_root`."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    artifact_root.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=artifact_root.as_uri()))


def log_training_run(
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    *,
    run_name: str,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    final_metrics: Mapping[str, float],
    tags: Mapping[str, str],
    artifacts: Mapping[str, Any] | None = None,
) -> str:
    """Log a finished training run (params, per-step metrics, tags, JSON artifacts); return its run id."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, experiment, artifact_root)
    run = client.create_run(exp_id, run_name=run_name, tags=dict(tags))
    run_id = run.info.run_id
    try:
        metrics: list[Metric] = []
        for i, row in enumerate(history):
            step = int(row.get("step", i + 1))
            for k, v in row.items():
                if k != "step":
                    metrics.append(Metric(_metric_key(k), float(v), 0, step))
        for k, v in final_metrics.items():
            metrics.append(Metric(f"final_{_metric_key(k)}", float(v), 0, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )
        for name, obj in (artifacts or {}).items():
            client.log_text(run_id, json.dumps(obj, indent=2, default=str), name)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _metric_key(k: str) -> str:
    return k.replace("/", "_")


def run_url(tracking_uri: str, run_id: str, experiment_id: str | None = None) -> str:
    """Where to find the run: the MLflow UI route (served by `make mlflow-ui`)."""
    exp = experiment_id or _client(tracking_uri).get_run(run_id).info.experiment_id
    return f"http://127.0.0.1:5000/#/experiments/{exp}/runs/{run_id}"


def find_training_runs(tracking_uri: str, experiment: str, checkpoint_sha256: str) -> list[dict[str, Any]]:
    """MLflow runs that produced the checkpoint with this digest (tag `checkpoint.sha256`)."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`checkpoint.sha256` = '{checkpoint_sha256}'"
    )
    return [
        {
            "run_id": r.info.run_id,
            "dagster_run_id": r.data.tags.get("dagster.run_id"),
            "partition": r.data.tags.get("dagster.partition"),
            "metrics": " ".join(
                f"{k}={v:.4g}" for k, v in sorted(r.data.metrics.items()) if k.startswith("final_")
            ),
        }
        for r in runs
    ]
