"""The weekly refresh: every Monday at 03:00, run the next alignment iteration on a fresh prompt shard.

The decision lives in `next_iteration_request` (plain arguments, so tests call it directly); the schedule
only wraps it with the instance, the recipe named by PREFSCALE_RECIPE and the iteration partitions.

- The next iteration is the lowest partition whose `dpo_checkpoint` has not been materialized yet: it starts
  from the latest checkpoint (`policy_for_iteration`) and samples its own, still unused prompt shard.
- When every partition 1..K has a checkpoint, the recipe's prompt pool is used up: the tick is skipped and
  says how to add prompts and iterations.
- The run materializes what one iteration of `make run` does (`alignment_iteration_job`: the recipe's
  `iteration_assets`, i.e. `prefscale.artifacts.ITERATION_ASSETS`, best_of_n when enabled, alpaca_eval_results),
  then the warehouse (`group:warehouse`), so the leaderboard is current when the run ends.
- A run of `alignment_iteration_job` that is queued or in progress skips the tick, so weeks never overlap.
- The bootstrap assets (`base_policy`, `eval_prompts`, `eval_baseline`) must exist first. A Dagster schedule
  can only launch its own job (the scheduler ignores a RunRequest's `job_name`), so when one is missing the
  tick is skipped with a reason that says to launch `bootstrap_job` once; the weekly refresh takes over from
  there.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dagster as dg

from assets.partitions import ITERATIONS
from sensors.jobs import alignment_iteration_job, bootstrap_job

BOOTSTRAP_ASSETS = ("base_policy", "eval_prompts", "eval_baseline")
CHECKPOINT = dg.AssetKey("dpo_checkpoint")
WEEKLY_CRON = "0 3 * * 1"  # Mondays, 03:00

# A run in one of these states still holds (or is about to hold) the iteration's partitions and the GPU pool.
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def active_runs(instance: dg.DagsterInstance, job_name: str) -> list[dg.DagsterRun]:
    """Runs of `job_name` that are queued or in progress, newest first."""
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=ACTIVE_STATUSES)))


def describe_runs(runs: Sequence[dg.DagsterRun]) -> str:
    """`run 1a2b3c4d (partition 2, STARTED)`, comma-separated."""
    parts = []
    for run in runs:
        partition = run.tags.get("dagster/partition")
        where = f"partition {partition}, " if partition else ""
        parts.append(f"run {run.run_id[:8]} ({where}{run.status.value})")
    return ", ".join(parts)


def missing_bootstrap(instance: dg.DagsterInstance) -> list[str]:
    """The bootstrap assets that have never been materialized."""
    return [
        name
        for name in BOOTSTRAP_ASSETS
        if instance.get_latest_materialization_event(dg.AssetKey(name)) is None
    ]


def next_iteration_request(
    instance: dg.DagsterInstance,
    partition_keys: Sequence[str],
    recipe_name: str,
    tick: str = "",
) -> dg.RunRequest | dg.SkipReason:
    """The RunRequest for the next alignment iteration, or a SkipReason saying why there is none this week.

    `partition_keys` are the iteration partitions ("1".."K"); `tick` (e.g. the scheduled date) goes into the
    run key so a tick is launched at most once while a later week can retry the same partition.
    """
    active = active_runs(instance, alignment_iteration_job.name)
    if active:
        return dg.SkipReason(
            f"{alignment_iteration_job.name} is already queued or in progress ({describe_runs(active)}); "
            "the weekly refresh waits for it and runs the next iteration on a later tick"
        )
    missing = missing_bootstrap(instance)
    if missing:
        return dg.SkipReason(
            f"the bootstrap assets {', '.join(missing)} have not been materialized yet: launch "
            f"{bootstrap_job.name} once (UI: Jobs → {bootstrap_job.name} → Materialize all), then the "
            "weekly refresh runs iteration 1"
        )
    done = instance.get_materialized_partitions(CHECKPOINT)
    todo = sorted((k for k in partition_keys if k not in done), key=int)
    if not todo:
        k = len(partition_keys)
        return dg.SkipReason(
            f"prompt pool exhausted: recipe {recipe_name!r} has {k} iterations and dpo_checkpoint is "
            f"materialized for all of them (1..{k}). To keep refreshing, add prompts to the pool (a larger "
            "data.pool_size for the embedded source, more rows in the data.path file for a file source: "
            "the pool must hold data.heldout_size + iterations x data.prompts_per_iteration distinct "
            "prompts) and raise `iterations` in the recipe, then reload the code location"
        )
    partition = todo[0]
    starts_from = "base_policy" if partition == "1" else f"dpo_checkpoint[{int(partition) - 1}]"
    return dg.RunRequest(
        run_key=f"weekly-iteration-{partition}-{tick}" if tick else None,
        partition_key=partition,
        tags={
            "prefscale/trigger": "weekly_refresh_schedule",
            "prefscale/recipe": recipe_name,
            "prefscale/starts_from": starts_from,
        },
    )


@dg.schedule(
    name="weekly_refresh_schedule",
    cron_schedule=WEEKLY_CRON,
    job=alignment_iteration_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Mondays 03:00: the next alignment iteration (lowest partition without a dpo_checkpoint), "
    "from the latest checkpoint on a fresh prompt shard. Skips when a run is in progress, when the "
    "bootstrap assets are missing, or when the recipe's iterations are all done.",
)
def weekly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    when = context.scheduled_execution_time
    return next_iteration_request(
        context.instance,
        ITERATIONS.get_partition_keys(),
        os.environ.get("PREFSCALE_RECIPE", "embedded"),
        tick=when.strftime("%Y-%m-%d") if when else "",
    )
