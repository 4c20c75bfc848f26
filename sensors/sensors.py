"""Sensors that react to the recipe's inputs changing: the labeling functions and the prompts file.

Each sensor keeps a content hash in its cursor and wraps a decision function that takes plain arguments
(the instance, the recipe file, the cursor, the iteration partitions), so tests call it with a temporary
recipe. The recipe is the one the assets use: PREFSCALE_RECIPE (a shipped name or a YAML path).

`lf_change_sensor` — the sha256 of the recipe's `labeling` section (the functions and the label-model
settings, as parsed, so comments and formatting do not count).
- First tick: records the hash as the baseline and requests nothing.
- On a change: re-labels the latest labeled iteration (the highest partition with `lf_votes`). It runs
  `lf_votes → quality_labels → reward_scores → preference_pairs → dpo_checkpoint → eval_results`, so the
  current policy head is retrained on labels from the new functions.
- Earlier iterations keep the labels they were trained on. Re-labeling one of them would invalidate every
  later iteration, whose candidates were sampled from its checkpoint; their versions stay as history.
- When nothing is labeled yet, the new set simply applies to the first iteration that runs.

`new_prompts_sensor` — the sha256 of the prompts file, for recipes whose `data.source` is `file` (it skips
for the embedded source).
- First tick: records the baseline.
- On a change: requests every `prompts` partition 1..K again, because the shards are one seeded split of
  one pool and must come from the same file. It also requests `eval_prompts`, the held-out split of that
  same pool, so the shards stay disjoint from what evaluation uses, together with `eval_baseline` when a
  base policy exists.
- Downstream iteration assets are not re-run (sampling and training are the expensive part): they show as
  stale in the UI, and the weekly refresh runs the next iteration on the new shards.

Both sensors keep the old cursor and retry on the next tick while a run of the iteration (or bootstrap) job
is queued or in progress, so a re-run never races a running iteration. Run keys are derived from the old and
new hashes: the same change never launches twice, while changing back (A → B → A) re-runs with A again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets.partitions import ITERATIONS
from prefscale.artifacts import ITERATION_ASSETS
from prefscale.config.base import RecipeError
from prefscale.config.recipe import Recipe, load_recipe, resolve_recipe_path
from prefscale.storage import file_sha256
from sensors.jobs import alignment_iteration_job, bootstrap_job
from sensors.schedules import active_runs, describe_runs

# lf_votes → … → eval_results: the iteration's assets from the labeling on, in order
RELABEL_ASSETS = [dg.AssetKey(name) for name in ITERATION_ASSETS[ITERATION_ASSETS.index("lf_votes") :]]
LF_VOTES = dg.AssetKey("lf_votes")
PROMPTS = dg.AssetKey("prompts")
EVAL_PROMPTS = dg.AssetKey("eval_prompts")
EVAL_BASELINE = dg.AssetKey("eval_baseline")
BASE_POLICY = dg.AssetKey("base_policy")
MIN_INTERVAL_S = 60


def recipe_path() -> Path | dg.SkipReason:
    """The recipe file the assets read (PREFSCALE_RECIPE: a shipped name or a YAML path)."""
    ref = os.environ.get("PREFSCALE_RECIPE", "embedded")
    try:
        return resolve_recipe_path(ref)
    except RecipeError as e:
        return dg.SkipReason(f"PREFSCALE_RECIPE={ref}: {e}")


def labeling_hash(recipe: Recipe) -> str:
    """sha256 of the recipe's parsed `labeling` section (functions + label-model settings)."""
    section = recipe.labeling.model_dump(mode="json")
    return hashlib.sha256(json.dumps(section, sort_keys=True).encode()).hexdigest()


def _load(path: Path) -> Recipe | dg.SkipReason:
    try:
        return load_recipe(str(path))
    except (RecipeError, OSError) as e:
        return dg.SkipReason(f"cannot read the recipe {path}: {e}")


def _busy(instance: dg.DagsterInstance, job_names: Sequence[str]) -> list[dg.DagsterRun]:
    return [run for name in job_names for run in active_runs(instance, name)]


def lf_change_decision(
    instance: dg.DagsterInstance, path: Path, cursor: str | None, partition_keys: Sequence[str]
) -> dg.SensorResult:
    """What `lf_change_sensor` does for the recipe at `path`, given its cursor (the last labeling hash)."""
    recipe = _load(path)
    if isinstance(recipe, dg.SkipReason):
        return dg.SensorResult(skip_reason=recipe, cursor=cursor)
    digest = labeling_hash(recipe)
    n = len(recipe.labeling.functions)
    if cursor is None:
        return dg.SensorResult(
            skip_reason=f"recorded the labeling set of {path} ({n} functions, sha256 {digest[:12]}) as the "
            "baseline; a later change requests re-labeling",
            cursor=digest,
        )
    if cursor == digest:
        return dg.SensorResult(
            skip_reason=f"labeling functions unchanged in {path} (sha256 {digest[:12]})", cursor=digest
        )
    busy = _busy(instance, [alignment_iteration_job.name])
    if busy:
        return dg.SensorResult(
            skip_reason=f"labeling functions changed in {path} (sha256 {cursor[:12]} → {digest[:12]}), but "
            f"{describe_runs(busy)} is queued or in progress; re-labeling is requested once it ends",
            cursor=cursor,
        )
    labeled = sorted(
        (k for k in instance.get_materialized_partitions(LF_VOTES) if k in partition_keys), key=int
    )
    if not labeled:
        return dg.SensorResult(
            skip_reason=f"labeling functions changed in {path} (sha256 {digest[:12]}); no iteration has "
            "lf_votes yet, so the new set applies to the first iteration that runs",
            cursor=digest,
        )
    latest = labeled[-1]
    request = dg.RunRequest(
        run_key=f"lf-{cursor[:12]}-to-{digest[:12]}-iteration-{latest}",
        job_name=alignment_iteration_job.name,
        partition_key=latest,
        asset_selection=RELABEL_ASSETS,
        tags={
            "prefscale/trigger": "lf_change_sensor",
            "prefscale/labeling_sha256": digest,
            "prefscale/labeling_functions": str(n),
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=digest)


def new_prompts_decision(
    instance: dg.DagsterInstance, path: Path, cursor: str | None, partition_keys: Sequence[str]
) -> dg.SensorResult:
    """What `new_prompts_sensor` does for the recipe at `path`, given its cursor (the last file sha256)."""
    recipe = _load(path)
    if isinstance(recipe, dg.SkipReason):
        return dg.SensorResult(skip_reason=recipe, cursor=cursor)
    if recipe.data.source != "file":
        return dg.SensorResult(
            skip_reason=f"recipe {recipe.name!r} ({path}) uses the {recipe.data.source} prompt source: "
            "there is no prompts file to watch",
            cursor=cursor,
        )
    # Relative paths resolve like the assets resolve them: against the code location's working directory.
    prompts_file = Path(recipe.data.path or "").expanduser()
    if not prompts_file.is_file():
        return dg.SensorResult(
            skip_reason=f"prompts file {prompts_file} (data.path of {path}) not found", cursor=cursor
        )
    digest = file_sha256(prompts_file)
    if cursor is None:
        return dg.SensorResult(
            skip_reason=f"recorded {prompts_file} (sha256 {digest[:12]}) as the baseline; a later change "
            "requests the prompt shards again",
            cursor=digest,
        )
    if cursor == digest:
        return dg.SensorResult(
            skip_reason=f"prompts file {prompts_file} unchanged (sha256 {digest[:12]})", cursor=digest
        )
    busy = _busy(instance, [alignment_iteration_job.name, bootstrap_job.name])
    if busy:
        return dg.SensorResult(
            skip_reason=f"prompts file {prompts_file} changed (sha256 {cursor[:12]} → {digest[:12]}), but "
            f"{describe_runs(busy)} is queued or in progress; the shards are requested once it ends",
            cursor=cursor,
        )
    made = instance.get_materialized_partitions(PROMPTS)
    if not made and instance.get_latest_materialization_event(EVAL_PROMPTS) is None:
        return dg.SensorResult(
            skip_reason=f"prompts file {prompts_file} changed (sha256 {digest[:12]}); no prompts have been "
            "materialized yet, so the next runs read the new file",
            cursor=digest,
        )
    tags = {"prefscale/trigger": "new_prompts_sensor", "prefscale/prompts_sha256": digest}
    requests = [
        dg.RunRequest(
            run_key=f"prompts-{cursor[:12]}-to-{digest[:12]}-{key}",
            job_name=alignment_iteration_job.name,
            partition_key=key,
            asset_selection=[PROMPTS],
            tags=tags,
        )
        for key in sorted(partition_keys, key=int)
    ]
    heldout = [EVAL_PROMPTS]
    if instance.get_latest_materialization_event(BASE_POLICY) is not None:
        heldout.append(EVAL_BASELINE)
    requests.append(
        dg.RunRequest(
            run_key=f"eval-prompts-{cursor[:12]}-to-{digest[:12]}",
            job_name=bootstrap_job.name,
            asset_selection=heldout,
            tags=tags,
        )
    )
    return dg.SensorResult(run_requests=requests, cursor=digest)


@dg.sensor(
    name="lf_change_sensor",
    job=alignment_iteration_job,
    minimum_interval_seconds=MIN_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A changed labeling-function set in the recipe re-labels the latest labeled iteration "
    "(lf_votes → … → dpo_checkpoint → eval_results). The cursor holds the labeling section's sha256.",
)
def lf_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    path = recipe_path()
    if isinstance(path, dg.SkipReason):
        return dg.SensorResult(skip_reason=path, cursor=context.cursor)
    return lf_change_decision(context.instance, path, context.cursor, ITERATIONS.get_partition_keys())


@dg.sensor(
    name="new_prompts_sensor",
    jobs=[alignment_iteration_job, bootstrap_job],
    minimum_interval_seconds=MIN_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="For recipes with data.source: file, a changed prompts file requests every prompts "
    "partition and the held-out split again. The cursor holds the file's sha256.",
)
def new_prompts_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    path = recipe_path()
    if isinstance(path, dg.SkipReason):
        return dg.SensorResult(skip_reason=path, cursor=context.cursor)
    return new_prompts_decision(context.instance, path, context.cursor, ITERATIONS.get_partition_keys())
