"""`sme_annotations_sensor`: SME annotation files in PREFSCALE_HOME/annotations/ → gold → re-labeling.

Two steps, one sensor (the decision lives in `annotations_decision`, which takes plain arguments so tests call it
directly):

1. **Ingest.** The cursor holds the name and sha256 of every annotation file (`*.jsonl`, `*.csv`) already
   handed to a run. When the folder differs from it (a file added, changed or removed), the sensor requests a
   run of `sme_annotations_job` (the `sme_annotations` asset). That asset validates every file and either
   publishes the new gold or fails, naming each bad file and line, and publishes nothing. A rejected file is
   not retried until it changes (its new sha256 is a new request).
2. **Re-label.** The cursor also holds the storage id of the last `sme_annotations` materialization it acted
   on. A newer one re-runs `quality_labels` (a run of `alignment_iteration_job` restricted to that asset) for
   each iteration whose gold changed (`affected_iterations` in its metadata) and that has a label matrix. The
   label model's and each labeling function's accuracy on the gold are then up to date. Rewards, pairs and
   checkpoints are not re-run (they show as stale): gold scores the labeling, it does not retrain.

Both steps wait while a run of the job they would launch is queued or in progress, keeping the old cursor.
Run keys come from the file digests and the materialization's storage id, so a change launches once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets.annotations import SME_ANNOTATIONS
from assets.labels import LF_VOTES, QUALITY_LABELS
from assets.partitions import ITERATIONS
from prefscale.labeling.gold import ANNOTATIONS_DIR, file_digests
from prefscale.storage import default_home
from sensors.jobs import alignment_iteration_job
from sensors.schedules import active_runs, describe_runs

MIN_INTERVAL_S = 30

sme_annotations_job = dg.define_asset_job(
    "sme_annotations_job",
    selection=dg.AssetSelection.assets(SME_ANNOTATIONS),
    description="Ingest the SME annotation files in PREFSCALE_HOME/annotations/ as gold labels.",
)


def _state(cursor: str | None) -> dict:
    if not cursor:
        return {"files": None, "handled": None}
    try:
        state = json.loads(cursor)
    except json.JSONDecodeError:
        return {"files": None, "handled": None}
    return {"files": state.get("files"), "handled": state.get("handled")}


def _digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _affected(record: dg.EventLogRecord) -> list[str]:
    mat = record.asset_materialization
    value = mat.metadata.get("affected_iterations") if mat else None
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        raw = json.loads(raw)
    return [str(k) for k in raw or []]


def annotations_decision(
    instance: dg.DagsterInstance, folder: Path, cursor: str | None, partition_keys: Sequence[str]
) -> dg.SensorResult:
    """What `sme_annotations_sensor` does, given the annotations folder and its cursor."""
    state = _state(cursor)
    requests: list[dg.RunRequest] = []
    notes: list[str] = []

    # 2. Re-label after an ingestion (checked first: it reacts to a run the previous tick requested).
    records = instance.fetch_materializations(SME_ANNOTATIONS, limit=1).records
    latest = records[0] if records else None
    if latest is not None and latest.storage_id != state["handled"]:
        if state["files"] is None and state["handled"] is None:
            notes.append("recorded the latest sme_annotations materialization as already handled")
            state["handled"] = latest.storage_id
        elif active_runs(instance, alignment_iteration_job.name):
            busy = describe_runs(active_runs(instance, alignment_iteration_job.name))
            notes.append(f"new gold, but {busy} is queued or in progress; re-labeling waits for it")
        else:
            labeled = set(instance.get_materialized_partitions(LF_VOTES))
            affected = [k for k in _affected(latest) if k in partition_keys]
            todo = [k for k in affected if k in labeled]
            for k in todo:
                requests.append(
                    dg.RunRequest(
                        run_key=f"gold-{latest.storage_id}-iteration-{k}",
                        job_name=alignment_iteration_job.name,
                        partition_key=k,
                        asset_selection=[QUALITY_LABELS],
                        tags={
                            "prefscale/trigger": "sme_annotations_sensor",
                            "prefscale/gold_event": str(latest.storage_id),
                        },
                    )
                )
            skipped = sorted(set(affected) - set(todo), key=int)
            notes.append(
                f"gold changed for iterations {affected or 'none'}; re-labeling {todo or 'none'}"
                + (f" (no label matrix yet for {skipped})" if skipped else "")
            )
            state["handled"] = latest.storage_id

    # 1. Ingest new or changed files.
    files = file_digests(folder)
    if state["files"] is None and not files:
        notes.append(f"no annotation files in {folder} yet; watching it")
        state["files"] = files
    elif files != state["files"]:
        if active_runs(instance, sme_annotations_job.name):
            busy = describe_runs(active_runs(instance, sme_annotations_job.name))
            notes.append(f"annotation files changed, but {busy} is queued or in progress; retried next tick")
        else:
            old = state["files"] or {}
            added = sorted(set(files) - set(old))
            changed = sorted(n for n in set(files) & set(old) if files[n] != old[n])
            removed = sorted(set(old) - set(files))
            requests.append(
                dg.RunRequest(
                    run_key=f"annotations-{_digest(files)[:16]}",
                    job_name=sme_annotations_job.name,
                    tags={
                        "prefscale/trigger": "sme_annotations_sensor",
                        "prefscale/annotation_files": ",".join(sorted(files))[:200],
                    },
                )
            )
            notes.append(
                f"annotation files in {folder}: added {added or 'none'}, changed {changed or 'none'}, "
                f"removed {removed or 'none'}; requested sme_annotations"
            )
            state["files"] = files
    elif not notes:
        notes.append(f"no new annotation files in {folder} ({len(files)} known)")

    new_cursor = json.dumps(state, sort_keys=True)
    if requests:
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)
    return dg.SensorResult(skip_reason="; ".join(notes), cursor=new_cursor)


@dg.sensor(
    name="sme_annotations_sensor",
    jobs=[sme_annotations_job, alignment_iteration_job],
    minimum_interval_seconds=MIN_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="New or changed SME annotation files in PREFSCALE_HOME/annotations/ request sme_annotations; "
    "a new gold set then re-runs quality_labels for the iterations it changed. The cursor holds the files' "
    "sha256 and the last handled materialization.",
)
def sme_annotations_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    folder = default_home() / ANNOTATIONS_DIR
    return annotations_decision(context.instance, folder, context.cursor, ITERATIONS.get_partition_keys())
