"""Two runs at once, a killed `make run` followed by the next, readers during a warehouse build, and a home that
fills up or turns read-only (`faulted_home` supplies the artifacts)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from prefscale.storage import ArtifactStore
from prefscale.warehouse import connect_read_only
from resources import RecipeResource, StorageResource
from sensors.recovery import end_dead_runs
from tests.reliability.conftest import REPO, kill_during, run_to_end, runner_env, start_runner, temps


def test_two_runs_of_one_partition_publish_one_version(faulted_home):
    store = ArtifactStore(faulted_home.home)
    procs = [start_runner(faulted_home.home, "prompts", "3") for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert len(store.versions("prompts", "3")) == 1
    assert temps(store.root / "prompts" / "3") == []


def test_a_killed_run_on_the_instance_does_not_block_the_next(faulted_home, tmp_path):
    """`make run`'s instance: a run SIGKILLed while it holds the gpu pool slot is ended by sensors/recovery.py,
    and the next run's gpu step starts instead of waiting for the slot forever."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(dagster_home), "RELIABILITY_PERSISTENT_INSTANCE": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        killed, rc, log = kill_during(faulted_home.home, "candidates", "1", "candidates")
        assert killed and rc < 0, log[-2000:]
        with dg.DagsterInstance.get() as instance:
            stuck = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            assert len(stuck) == 1  # what the kill leaves behind
            ended = end_dead_runs(instance)
            assert ended == [stuck[0].run_id]
            assert instance.get_run_by_id(ended[0]).status == dg.DagsterRunStatus.FAILURE
            assert end_dead_runs(instance) == []  # nothing else to end
        out, rc = run_to_end(faulted_home.home, "candidates", "1", env)
        assert rc == 0, out[-3000:]
        assert "blocked by limit for pool" not in out
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_reading_the_warehouse_during_a_build_waits_instead_of_failing(faulted_home):
    db = faulted_home.home / "warehouse.duckdb"
    build = start_runner(faulted_home.home, "warehouse", None)
    reads, errors = [], []

    def read() -> None:
        while build.poll() is None:
            try:
                with connect_read_only(db, wait_s=120) as con:
                    reads.append(con.execute("select count(*) from eval_leaderboard").fetchone()[0])
            except Exception as e:  # what a reader would see
                errors.append(repr(e))
            time.sleep(0.2)

    reader = threading.Thread(target=read)
    reader.start()
    out = build.communicate(timeout=600)[0]
    reader.join(timeout=180)
    assert build.returncode == 0, out[-3000:]
    assert errors == [] and reads and all(n > 0 for n in reads)


def _prompts_run(home: Path) -> dg.ExecuteInProcessResult:
    from assets.prompts import eval_prompts, prompts

    resources = {"storage": StorageResource(home=str(home)), "recipe": RecipeResource(name="embedded")}
    return dg.materialize(
        [prompts, eval_prompts],
        selection=[prompts],
        partition_key="1",
        resources=resources,
        raise_on_error=False,
    )


def _error_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    err, texts = failures[0].step_failure_data.error, []
    while err is not None:
        texts.append(err.message)
        err = err.cause
    return "\n".join(texts)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root with mount rights); skips where one cannot be made."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_fails_cleanly_then_recovers(small_disk):
    home = small_disk / "home"
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    result = _prompts_run(home)
    assert not result.success
    assert "No space left on device" in _error_text(result)
    store = ArtifactStore(home)
    assert store.versions("prompts", "1") == [] and temps(store.root / "prompts" / "1") == []
    filler.unlink()
    assert _prompts_run(home).success
    assert len(store.versions("prompts", "1")) == 1


def test_read_only_home_fails_naming_it_and_changes_nothing(small_disk):
    home = small_disk / "home"
    assert _prompts_run(home).success
    store = ArtifactStore(home)
    before = store.current("prompts", "1").version
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = _prompts_run(home)  # the same shard again: a new version would need a write
    assert not result.success
    assert "Read-only file system" in _error_text(result)
    assert store.current("prompts", "1").version == before
    assert store.versions("prompts", "1") == [before]


def test_the_daemon_and_a_cli_run_share_one_instance(faulted_home, tmp_path):
    """`make ui`'s daemon (sensors and schedule ticking) and a CLI run on the same instance: both carry on."""
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **runner_env(faulted_home.home),
        "DAGSTER_HOME": str(dagster_home),
        "RELIABILITY_PERSISTENT_INSTANCE": "1",
        "PREFSCALE_RECIPE": "embedded",
    }
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not instance.get_daemon_heartbeats().get("SENSOR"):
                assert daemon.poll() is None, "the daemon exited"
                time.sleep(0.5)
            assert instance.get_daemon_heartbeats().get("SENSOR"), "no sensor daemon heartbeat"
            out, rc = run_to_end(faulted_home.home, "prompts", "1", env)
            assert rc == 0, out[-3000:]
            runs = instance.get_runs()
            assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
            assert daemon.poll() is None, "the daemon died during the run"
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        out = daemon.communicate(timeout=60)[0]
    assert "Traceback" not in out, out[-3000:]
