"""`sme_annotations_sensor`: SME annotation files in PREFSCALE_HOME/annotations/ and Label Studio → gold →
re-labeling (and re-judging, for the blind evaluation's votes).

Two steps, one sensor (the decision lives in `annotations_decision`, which takes plain arguments so tests call it
directly):

1. **Ingest.** The cursor holds the name and sha256 of every annotation file (`*.jsonl`, `*.csv`) already
   handed to a run. When the folder differs from it (a file added, changed or removed), the sensor requests a
   run of `sme_annotations_job` (the `sme_annotations` asset). That asset validates every file and either
   publishes the new gold or fails, naming each bad file and line, and publishes nothing. A rejected file is
   not retried until it changes (its new sha256 is a new request). When LABEL_STUDIO_API_KEY is set, the
   cursor also holds a digest of every annotation in the two Label Studio projects (ids and update times):
   a new, edited, skipped or deleted annotation requests the same run.
2. **Re-label.** The cursor also holds the storage id of the last `sme_annotations` materialization it acted
   on. A newer one re-runs `quality_labels` (a run of `alignment_iteration_job` restricted to that asset) for
   each iteration whose gold changed (`affected_iterations` in its metadata) and that has a label matrix. The
   label model's and each labeling function's accuracy on the gold are then up to date. Rewards, pairs and
   checkpoints are not re-run (they show as stale): gold scores the labeling, it does not retrain. Iterations
   whose blind-evaluation votes changed (`votes_changed_iterations`) re-run `alpaca_eval_results`, so the `sme`
   judge's row in the leaderboard follows the votes.

Both steps wait while a run of the job they would launch is queued or in progress, keeping the old cursor.
Run keys come from the file digests and the materialization's storage id, so a change launches once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets.alpaca_eval import ALPACA_EVAL_RESULTS
from assets.annotations import SME_ANNOTATIONS
from assets.labels import LF_VOTES, QUALITY_LABELS
from assets.partitions import ITERATIONS
from prefscale.annotation.collect import tool_state
from prefscale.annotation.label_studio import LabelStudioError
from prefscale.labeling.gold import ANNOTATIONS_DIR, file_digests
from prefscale.storage import default_home
from resources.label_studio import LabelStudioResource
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
        return {"files": None, "handled": None, "tool": None}
    try:
        state = json.loads(cursor)
    except json.JSONDecodeError:
        return {"files": None, "handled": None, "tool": None}
    return {"files": state.get("files"), "handled": state.get("handled"), "tool": state.get("tool")}


def _digest(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _affected(record: dg.EventLogRecord, key: str = "affected_iterations") -> list[str]:
    mat = record.asset_materialization
    value = mat.metadata.get(key) if mat else None
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        raw = json.loads(raw)
    return [str(k) for k in raw or []]


def _rerun(latest: dg.EventLogRecord, partition: str, asset: dg.AssetKey, why: str) -> dg.RunRequest:
    """Re-run one asset of an iteration after the `sme_annotations` materialization `latest` (one run key each)."""
    return dg.RunRequest(
        run_key=f"{why}-{latest.storage_id}-iteration-{partition}",
        job_name=alignment_iteration_job.name,
        partition_key=partition,
        asset_selection=[asset],
        tags={"prefscale/trigger": "sme_annotations_sensor", "prefscale/gold_event": str(latest.storage_id)},
    )


def annotations_decision(
    instance: dg.DagsterInstance,
    folder: Path,
    cursor: str | None,
    partition_keys: Sequence[str],
    tool: str | None = None,
) -> dg.SensorResult:
    """What `sme_annotations_sensor` does, given the annotations folder, its cursor and the digest of the
    annotation tool's annotations (None: no tool configured, or it could not be read)."""
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
            requests += [_rerun(latest, k, QUALITY_LABELS, "gold") for k in todo]
            judged = set(instance.get_materialized_partitions(ALPACA_EVAL_RESULTS))
            rejudge = [k for k in _affected(latest, "votes_changed_iterations") if k in judged]
            requests += [_rerun(latest, k, ALPACA_EVAL_RESULTS, "votes") for k in rejudge]
            if rejudge:
                notes.append(f"SME votes changed for iterations {rejudge}; re-judging them")
            skipped = sorted(set(affected) - set(todo), key=int)
            notes.append(
                f"gold changed for iterations {affected or 'none'}; re-labeling {todo or 'none'}"
                + (f" (no label matrix yet for {skipped})" if skipped else "")
            )
            state["handled"] = latest.storage_id

    # 1. Ingest new or changed files, or new annotations in the tool.
    files = file_digests(folder)
    tool_changed = tool is not None and tool != state["tool"]
    if state["files"] is None and not files and not tool_changed:
        notes.append(f"no annotation files in {folder} yet; watching it")
        state["files"] = files
    elif files != state["files"] or tool_changed:
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
                    run_key=f"annotations-{_digest({**files, '': tool or ''})[:16]}",
                    job_name=sme_annotations_job.name,
                    tags={
                        "prefscale/trigger": "sme_annotations_sensor",
                        "prefscale/annotation_files": ",".join(sorted(files))[:200],
                    },
                )
            )
            notes.append(
                f"annotation files in {folder}: added {added or 'none'}, changed {changed or 'none'}, "
                f"removed {removed or 'none'}"
                + ("; new or changed annotations in Label Studio" if tool_changed else "")
                + "; requested sme_annotations"
            )
            state["files"] = files
            state["tool"] = tool if tool is not None else state["tool"]
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
    description="New or changed SME annotation files in PREFSCALE_HOME/annotations/, or new annotations in "
    "Label Studio, request sme_annotations; a new gold set then re-runs quality_labels for the iterations it "
    "changed (alpaca_eval_results where the SMEs' votes changed). The cursor holds the files' sha256, a digest "
    "of the tool's annotations and the last handled materialization.",
)
def sme_annotations_sensor(
    context: dg.SensorEvaluationContext, label_studio: LabelStudioResource
) -> dg.SensorResult:
    folder = default_home() / ANNOTATIONS_DIR
    tool = None
    if label_studio.configured:
        try:
            projects = [label_studio.ranking_project, label_studio.evaluation_project]
            tool = tool_state(label_studio.client(), projects)
        except LabelStudioError as e:
            context.log.warning(f"Label Studio not read this tick: {e}")
    return annotations_decision(
        context.instance, folder, context.cursor, ITERATIONS.get_partition_keys(), tool
    )
