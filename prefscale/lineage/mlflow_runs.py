"""MLflow lineage: one run per DPO checkpoint, tagged back to the Dagster run, partition and inputs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def tracking_uri_for(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def mlflow_client(tracking_uri: str) -> Any:
    """An MlflowClient for `tracking_uri`, telemetry off."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


# MLflow 3's UI shows an experiment as "GenAI apps & agents" or as "Model training" (machine learning). The tag
# records the kind on the experiment; MLflow 3.17's UI itself picks the view from its sidebar switch (kept in the
# browser) or from the `workflowType` URL parameter, so every MLflow link prefscale prints carries that too.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
ML_VIEW_QUERY = "workflowType=machine_learning"
MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path) -> str:
    """Experiment id, creating it with an explicit artifact location under `artifact_root`.

    The experiment is tagged as a model-training one (`EXPERIMENT_KIND_TAG`); an existing experiment without the
    tag gets it, one whose kind was chosen (in the UI or by hand) keeps it.
    """
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return str(exp.experiment_id)
    artifact_root.mkdir(parents=True, exist_ok=True)
    return str(
        client.create_experiment(
            name, artifact_location=artifact_root.as_uri(), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    )


# --- links back to Dagster -----------------------------------------------------------------------------------

DAGSTER_URL_ENV = "PREFSCALE_DAGSTER_URL"  # the Dagster UI's base URL; `make ui` sets it for its runs
NOTE_TAG = "mlflow.note.content"  # the run's "Description" in the MLflow UI (markdown)


def dagster_base_url(value: str | None) -> str:
    """`value` as a base URL (`http(s)://host[:port][/prefix]`, no trailing slash); "" when unset or not one."""
    from urllib.parse import urlsplit

    url = (value or "").strip().rstrip("/")
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        return ""
    return url


def dagster_run_tags(
    run_id: str, asset_key: str, partition: str | None, base_url: str = ""
) -> dict[str, str]:
    """The tags linking an MLflow run to the Dagster run that made it.

    Always `dagster.run_id`, `dagster.asset_key` and `dagster.partition` (when partitioned). With a base URL
    (`dagster_base_url`), also `dagster.run_url` and a note (the run's description in the MLflow UI) with
    markdown links to the Dagster run and to the asset (its partition); without one, no URL at all.
    """
    from urllib.parse import quote

    tags = {"dagster.run_id": run_id, "dagster.asset_key": asset_key}
    if partition is not None:
        tags["dagster.partition"] = partition
    base = dagster_base_url(base_url)
    if not base:
        return tags
    run_link = f"{base}/runs/{quote(run_id, safe='')}"
    asset_path = "/".join(quote(part, safe="") for part in asset_key.split("/"))
    asset_link = f"{base}/assets/{asset_path}"
    asset_label = asset_key
    if partition is not None:
        asset_link += f"?view=partitions&partition={quote(partition, safe='')}"
        asset_label += f"[{partition}]"
    tags["dagster.run_url"] = run_link
    tags[NOTE_TAG] = (
        f"Made by [Dagster run {run_id}]({run_link}), materializing [{asset_label}]({asset_link})."
    )
    return tags


@contextlib.contextmanager
def open_run(
    tracking_uri: str, experiment: str, artifact_root: Path, run_name: str, tags: Mapping[str, str]
) -> Iterator[tuple[Any, str]]:
    """(client, run id) of a new run in `experiment`; the run ends FINISHED, or FAILED when the body raises."""
    client = mlflow_client(tracking_uri)
    exp_id = ensure_experiment(tracking_uri, experiment, artifact_root)
    run_id = client.create_run(exp_id, run_name=run_name, tags=dict(tags)).info.run_id
    try:
        yield client, run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


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
    datasets: Sequence[tuple[Any, Mapping[str, str]]] = (),
) -> str:
    """Log a finished training run (params, per-step metrics, tags, JSON artifacts, dataset inputs); its id.

    `datasets` are (MLflow dataset, input tags) pairs, e.g. from `pairs_dataset`.
    """
    from mlflow.entities import Metric, Param, RunTag

    with open_run(tracking_uri, experiment, artifact_root, run_name, tags) as (client, run_id):
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
        if datasets:
            log_dataset_inputs(tracking_uri, run_id, datasets)
    return run_id


def _metric_key(k: str) -> str:
    return k.replace("/", "_")


def run_url(tracking_uri: str, run_id: str, experiment_id: str | None = None) -> str:
    """Where to find the run: the MLflow UI route (served by `make mlflow-ui`), in its model-training view."""
    exp = experiment_id or mlflow_client(tracking_uri).get_run(run_id).info.experiment_id
    return f"{MLFLOW_UI}/#/experiments/{exp}/runs/{run_id}?{ML_VIEW_QUERY}"


def find_training_runs(tracking_uri: str, experiment: str, checkpoint_sha256: str) -> list[dict[str, Any]]:
    """MLflow runs that produced the checkpoint with this digest (tag `checkpoint.sha256`)."""
    client = mlflow_client(tracking_uri)
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


# --- datasets and the model registry -------------------------------------------------------------------------

MLFLOW_DIGEST_CHARS = 32  # MLflow stores a dataset digest in at most 36 characters


def pairs_dataset(
    pairs: Any, *, name: str, source: str, sha256: str, context: str = "training"
) -> tuple[Any, dict[str, str]]:
    """(MLflow dataset, input tags) for a preference-pairs table: text columns, digest from its sha256.

    The messages columns (lists of {role, content}) become their text, so MLflow can profile the table. The
    dataset's digest is the first 32 hex digits of the artifact's sha256; the full digest is an input tag.
    """
    import mlflow.data

    def text(col: str) -> list[str]:
        return ["\n".join(m["content"] for m in msgs) for msgs in pairs[col].to_list()]

    cols = {c: text(c) for c in ("prompt", "chosen", "rejected")}
    for c in ("prompt_id", "chosen_reward", "rejected_reward", "margin"):
        if c in pairs.columns:
            cols[c] = pairs[c].to_list()
    import pandas as pd

    with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local file, either way
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_pandas(
            pd.DataFrame(cols),
            source=source,
            name=name,
            digest=sha256[:MLFLOW_DIGEST_CHARS] if sha256 else None,
        )
    tags = {"mlflow.data.context": context, "sha256": sha256, "rows": str(len(cols["prompt"]))}
    return ds, tags


def log_dataset_inputs(
    tracking_uri: str, run_id: str, datasets: Sequence[tuple[Any, Mapping[str, str]]]
) -> None:
    """Log (dataset, tags) pairs as the run's inputs (`mlflow.log_input` for an explicit run)."""
    from mlflow.entities import DatasetInput, InputTag

    inputs = [
        DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(k, str(v)) for k, v in tags.items()])
        for ds, tags in datasets
    ]
    mlflow_client(tracking_uri).log_inputs(run_id, datasets=inputs)


def registered_model_name(recipe: str) -> str:
    return f"prefscale-{recipe}"


def register_checkpoint(
    tracking_uri: str,
    name: str,
    *,
    source: str,
    run_id: str,
    tags: Mapping[str, str],
    description: str = "",
) -> str:
    """Register `source` (a checkpoint folder) as a new version of registered model `name`; return the version.

    Works against the sqlite tracking store without a server. The registered model is created on first use.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="prefscale DPO checkpoints, one version per dpo_checkpoint materialization"
            )
        except MlflowException:
            client.get_registered_model(name)  # created concurrently: fine; anything else: raise
    mv = client.create_model_version(
        name,
        source=source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description or None,
    )
    return str(mv.version)


def find_model_versions(tracking_uri: str, name: str, checkpoint_sha256: str | None = None) -> list[Any]:
    """Registered versions of `name` (optionally only those of one checkpoint digest), newest first."""
    client = mlflow_client(tracking_uri)
    versions = client.search_model_versions(f"name = '{name}'")
    if checkpoint_sha256:
        versions = [v for v in versions if v.tags.get("checkpoint.sha256") == checkpoint_sha256]
    return sorted(versions, key=lambda v: int(v.version), reverse=True)


@dataclass(frozen=True)
class RegisteredCheckpoint:
    """One registered model version and what its tags say about the checkpoint it holds."""

    name: str
    version: str
    source: str
    run_id: str
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"models:/{self.name}/{self.version}"


_MODEL_REF = re.compile(r"^(?:models:/)?(?P<name>[^/@\s]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[\w-]+))$")


def parse_model_ref(what: str) -> tuple[str, str | None, str | None] | None:
    """(name, version, alias) of `models:/NAME/VERSION`, `models:/NAME@ALIAS`, `NAME/VERSION` or `NAME@ALIAS`.

    VERSION is a number or `latest`. None when `what` has neither form.
    """
    m = _MODEL_REF.match(what.strip())
    if m is None:
        return None
    return m["name"], m["version"], m["alias"]


def registered_checkpoint(tracking_uri: str, what: str) -> RegisteredCheckpoint:
    """The registered model version `what` names (see `parse_model_ref`); `LookupError` naming what is missing."""
    from mlflow.exceptions import MlflowException

    parsed = parse_model_ref(what)
    if parsed is None:
        raise ValueError(f"{what}: not an MLflow model version (models:/NAME/VERSION or NAME/VERSION)")
    name, version, alias = parsed
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():  # MLflow would create an empty store: say what is missing instead
            raise LookupError(f"{what}: no MLflow tracking store at {db}")
    client = mlflow_client(tracking_uri)
    try:
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        elif version == "latest":
            versions = find_model_versions(tracking_uri, name)
            if not versions:
                raise LookupError(f"{what}: registered model {name!r} has no versions in {tracking_uri}")
            mv = versions[0]
        else:
            mv = client.get_model_version(name, version)
    except MlflowException as e:
        raise LookupError(
            f"{what}: no such registered model version in {tracking_uri} ({e.message})"
        ) from None
    return RegisteredCheckpoint(
        name=mv.name,
        version=str(mv.version),
        source=mv.source or "",
        run_id=mv.run_id or "",
        tags=dict(mv.tags or {}),
    )


def model_versions_of_checkpoint(tracking_uri: str, checkpoint_sha256: str) -> list[RegisteredCheckpoint]:
    """Every registered model version (any registered model) whose tag `checkpoint.sha256` is this digest."""
    client = mlflow_client(tracking_uri)
    found = client.search_model_versions(f"tags.`checkpoint.sha256` = '{checkpoint_sha256}'")
    return sorted(
        (
            RegisteredCheckpoint(v.name, str(v.version), v.source or "", v.run_id or "", dict(v.tags or {}))
            for v in found
        ),
        key=lambda r: (r.name, int(r.version)),
    )
