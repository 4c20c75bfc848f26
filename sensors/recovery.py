"""Runs whose process died (SIGKILL, OOM, a closed laptop) without telling the instance: found and ended.

A run killed that way stays STARTED in the instance and keeps its `gpu` pool slot, so the next run's steps wait
forever ("Step blocked by limit for pool gpu"). `make run` and `make ui` run `python sensors/recovery.py` first
(a script: the code location is not loaded). Only runs of this machine's default run launcher are judged (their
process ids are in their events); a run one of whose processes still lives is left alone.
"""

from __future__ import annotations

import sys

import dagster as dg

from prefscale.storage import process_alive

IN_FLIGHT = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _run_pids(instance: dg.DagsterInstance, run_id: str) -> set[int]:
    events = (e.dagster_event for e in instance.all_logs(run_id) if e.dagster_event is not None)
    return {ev.pid for ev in events if ev.pid is not None}


def end_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed, and free the pool slots of, every in-flight run none of whose processes is alive."""
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return []  # runs live elsewhere (k8s, docker): their own monitoring judges them
    ended = []
    for run in instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)):
        pids = _run_pids(instance, run.run_id)
        if not pids or any(process_alive(p) for p in pids):
            continue
        instance.report_run_failed(
            run, f"the run's process ({', '.join(map(str, sorted(pids)))}) is gone: ended by sensors.recovery"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        ended.append(run.run_id)
    return ended


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        for run_id in end_dead_runs(instance):
            print(
                f"ended run {run_id}: its process had died (its pool slots are free again)", file=sys.stderr
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
