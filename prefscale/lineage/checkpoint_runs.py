"""A published DPO checkpoint's lineage: one MLflow run (params, per-step metrics, the pairs as a dataset input,
tags back to the Dagster run and every input version) and one version of the recipe's registered model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.config.training import DPOSettings, OnlineSettings
from prefscale.lineage.mlflow_runs import (
    NOTE_TAG,
    log_training_run,
    pairs_dataset,
    register_checkpoint,
    registered_model_name,
)
from prefscale.storage import ArtifactRef
from prefscale.training.dpo import DPOReport
from prefscale.training.launch import CHECKPOINT_RECORD, artifact_label

NOT_REGISTERED = "not registered (a blocking check failed)"


@dataclass(frozen=True)
class CheckpointLineage:
    run_id: str
    model_name: str
    model_version: str  # NOT_REGISTERED when the checkpoint did not load or its completions collapsed


def flat_params(prefix: str, d: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings as MLflow params: `{"a": {"b": 1}}` → `{"<prefix>a.b": 1}`."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flat_params(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def record_checkpoint(
    tracking_uri: str,
    experiment: str,
    artifact_root: Path,
    *,
    recipe: str,
    iteration: int,
    checkpoint: ArtifactRef,
    start: ArtifactRef,
    pairs_ref: ArtifactRef,
    pairs: pl.DataFrame,
    inputs: Sequence[ArtifactRef],
    settings: DPOSettings | OnlineSettings,
    seed: int,
    device: str,
    report: DPOReport,
    run_tags: Mapping[str, str],
    register: bool,
    method: str = "dpo",
) -> CheckpointLineage:
    """Log the training run of `checkpoint` and, when `register` (it loads), register it as a model version.

    `run_tags` are the orchestrator's (`dagster_run_tags`: Dagster run id, asset key, partition, and the note
    linking back to the Dagster UI when its URL is known); the inputs' versions, the pairs' and the checkpoint's
    digests are added here. The model version carries the same tags but the note, which goes to its description.
    An online method (grpo, rloo) trains from `pairs_ref` = the iteration's quality_labels (the label model of its
    reward), which is a tag and an upstream version, not a dataset input: its rows are not what it trained on.
    """
    started_from = artifact_label(start)
    params = {
        "iteration": iteration,
        "recipe": recipe,
        "method": method,
        **({"n_pairs": pairs.height} if method == "dpo" else {}),
        "seed": seed,
        "started_from": started_from,
        "reference": getattr(settings, "reference", "previous"),
        "world_size": report.world_size,
        "device": device,
        **flat_params(f"{'dpo' if method == 'dpo' else 'online'}.", settings.model_dump(mode="json")),
    }
    data = "pairs" if method == "dpo" else "labels"
    tags = {
        **run_tags,
        f"{data}.sha256": pairs_ref.digest,
        f"{data}.version": pairs_ref.version,
        "checkpoint.sha256": checkpoint.digest,
        "checkpoint.version": checkpoint.version,
        "checkpoint.path": str(checkpoint.path),
        **{f"upstream.{a.asset}.{a.partition}": a.version for a in inputs},
    }
    datasets = []
    if method == "dpo":
        datasets.append(
            pairs_dataset(
                pairs,
                name=f"preference_pairs[{iteration}]@{pairs_ref.version}",
                source=str(pairs_ref.file()),
                sha256=pairs_ref.digest,
            )
        )
    run_id = log_training_run(
        tracking_uri,
        experiment,
        artifact_root,
        run_name=f"dpo_checkpoint-{iteration}",
        params=params,
        history=report.history,
        final_metrics={
            **report.final,
            "train_seconds": report.seconds,
            "steps": report.steps,
            "steps_run": report.steps_run,
            "resumed_from_step": report.resumed_from_step,
        },
        tags=tags,
        artifacts={
            "checkpoint.json": json.loads((checkpoint.path / CHECKPOINT_RECORD).read_text()),
            f"{method}_config.json": report.trainer_args,
        },
        datasets=datasets,
    )
    name = registered_model_name(recipe)
    version = NOT_REGISTERED
    if register:
        version = register_checkpoint(
            tracking_uri,
            name,
            source=str(checkpoint.path),
            run_id=run_id,
            tags={
                **{k: v for k, v in tags.items() if k != NOTE_TAG},
                "recipe": recipe,
                "mlflow.run_id": run_id,
            },
            description="\n\n".join(
                [f"dpo_checkpoint[{iteration}]@{checkpoint.version} from {started_from}"]
                + ([tags[NOTE_TAG]] if NOTE_TAG in tags else [])
            ),
        )
    return CheckpointLineage(run_id, name, version)
