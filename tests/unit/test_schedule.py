"""The weekly refresh schedule against a throwaway Dagster instance (no assets are run)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

import definitions
from sensors.jobs import alignment_iteration_job
from sensors.schedules import BOOTSTRAP_ASSETS, WEEKLY_CRON, next_iteration_request, weekly_refresh_schedule

MONDAY = dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def bootstrap(instance: dg.DagsterInstance) -> None:
    for name in BOOTSTRAP_ASSETS:
        materialize(instance, name)


def tick(instance: dg.DagsterInstance):
    return weekly_refresh_schedule(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=MONDAY)
    )


def add_run(
    instance: dg.DagsterInstance,
    status: dg.DagsterRunStatus,
    partition: str = "2",
    job_name: str = alignment_iteration_job.name,
) -> str:
    """Record a run of `job_name` in `status` (queued runs need a code origin; a registered name will do)."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("definitions"), "__repository__"), job_name
    )
    run = dg.DagsterRun(
        job_name=job_name, status=status, tags={"dagster/partition": partition}, remote_job_origin=origin
    )
    instance.add_run(run)
    return run.run_id


def test_schedule_definition():
    assert weekly_refresh_schedule.cron_schedule == WEEKLY_CRON == "0 3 * * 1"
    assert weekly_refresh_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert weekly_refresh_schedule.job_name == "alignment_iteration_job"
    assert weekly_refresh_schedule in definitions.defs.schedules


def test_skips_until_bootstrap_is_materialized(instance):
    result = tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert "base_policy, eval_prompts, eval_baseline" in result.skip_message
    assert "bootstrap_job" in result.skip_message
    materialize(instance, "base_policy")
    materialize(instance, "eval_prompts")
    result = tick(instance)
    assert isinstance(result, dg.SkipReason) and "eval_baseline" in result.skip_message
    assert "base_policy" not in result.skip_message


def test_requests_partition_1_after_bootstrap(instance):
    bootstrap(instance)
    result = tick(instance)
    assert isinstance(result, dg.RunRequest)
    assert result.partition_key == "1"
    assert result.run_key == "weekly-iteration-1-2026-11-23"
    assert result.tags["prefscale/starts_from"] == "base_policy"


def test_requests_the_lowest_partition_without_a_checkpoint(instance):
    bootstrap(instance)
    materialize(instance, "dpo_checkpoint", "1")
    result = tick(instance)
    assert isinstance(result, dg.RunRequest) and result.partition_key == "2"
    assert result.tags["prefscale/starts_from"] == "dpo_checkpoint[1]"
    # an out-of-order checkpoint does not hide a gap: the lowest missing partition comes first
    materialize(instance, "dpo_checkpoint", "3")
    result = tick(instance)
    assert isinstance(result, dg.RunRequest) and result.partition_key == "2"
    materialize(instance, "dpo_checkpoint", "2")
    assert isinstance(tick(instance), dg.SkipReason)


def test_ordering_is_numeric_beyond_nine(instance):
    bootstrap(instance)
    keys = [str(i) for i in range(1, 12)]
    for k in keys[:9]:
        materialize(instance, "dpo_checkpoint", k)
    result = next_iteration_request(instance, keys, "big")
    assert isinstance(result, dg.RunRequest) and result.partition_key == "10"
    assert result.run_key is None  # no tick date: no run key


def test_skips_when_the_prompt_pool_is_exhausted(instance):
    bootstrap(instance)
    for k in ("1", "2", "3"):
        materialize(instance, "dpo_checkpoint", k)
    result = tick(instance)
    assert isinstance(result, dg.SkipReason)
    msg = result.skip_message
    assert "prompt pool exhausted" in msg and "'embedded'" in msg and "1..3" in msg
    assert "iterations" in msg and "data.pool_size" in msg and "data.path" in msg


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTED])
def test_skips_while_an_iteration_run_is_active(instance, status):
    bootstrap(instance)
    run_id = add_run(instance, status)
    result = tick(instance)
    assert isinstance(result, dg.SkipReason)
    assert "already queued or in progress" in result.skip_message
    assert run_id[:8] in result.skip_message and "partition 2" in result.skip_message


def test_finished_runs_do_not_block(instance):
    bootstrap(instance)
    add_run(instance, dg.DagsterRunStatus.SUCCESS)
    add_run(instance, dg.DagsterRunStatus.FAILURE)
    result = tick(instance)
    assert isinstance(result, dg.RunRequest) and result.partition_key == "1"


def test_full_tick_evaluation_resolves_the_partition(instance):
    bootstrap(instance)
    materialize(instance, "dpo_checkpoint", "1")
    context = dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=MONDAY,
        repository_def=definitions.defs.get_repository_def(),
    )
    data = weekly_refresh_schedule.evaluate_tick(context)
    assert data.skip_message is None
    (request,) = data.run_requests
    assert request.partition_key == "2"
    assert request.tags["dagster/partition"] == "2"
    assert request.tags["dagster/schedule_name"] == "weekly_refresh_schedule"
