"""`make ui`'s launcher (sensors/ui.py): what it says at start, and that a SIGTERM stops every process it started.

The end-to-end test starts the launcher on a free loopback port against a temporary DAGSTER_HOME, with a one-line
code location (the real one takes a minute to load on 2 cores; the signal path is the same), waits until the
webserver answers, sends SIGTERM to the launcher (what GNU make forwards to its child when it gets one) and
checks that it exits and that no process carrying that DAGSTER_HOME is left (dagster dev, webserver, daemon, code
servers). The banner it prints comes from the real `definitions.defs`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from sensors.ui import banner, describe_automations, describe_cron, ui_url

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 150  # a busy 2-core machine: the banner imports the definitions, then dagster dev starts
STOP_TIMEOUT_S = 60


@pytest.mark.parametrize(
    ("cron", "tz", "text"),
    [
        ("0 3 * * 1", None, "every Monday at 03:00 UTC"),
        ("30 22 * * 0", "Europe/Paris", "every Sunday at 22:30 Europe/Paris"),
        ("5 1 * * 7", None, "every Sunday at 01:05 UTC"),
        ("0 6 * * *", None, "every day at 06:00 UTC"),
        ("*/15 * * * *", None, "on cron `*/15 * * * *` (UTC)"),
    ],
)
def test_cron_in_words(cron, tz, text):
    assert describe_cron(cron, tz) == text


def test_the_banner_states_the_weekly_monday_refresh_and_the_sensors_that_are_on():
    import definitions

    lines = describe_automations(definitions.defs)
    assert "[on] weekly_refresh_schedule: every Monday at 03:00 UTC, runs alignment_iteration_job" in lines
    for sensor in ("lf_change_sensor", "new_prompts_sensor", "sme_annotations_sensor"):
        assert any(line.startswith(f"[on] {sensor} (checked every ") for line in lines), sensor
    text = banner(ui_url("127.0.0.1", 3000), lines)
    assert text.startswith("prefscale: the Dagster UI will be at http://127.0.0.1:3000 (Ctrl-C stops")


def test_a_toggle_made_in_the_ui_wins_over_the_default_and_says_so():
    @dg.op
    def noop() -> None:
        pass

    @dg.job(name="j")
    def job() -> None:
        noop()

    @dg.sensor(
        job=job,
        default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=45,
        description="Watches nothing. A second sentence is left out.",
    )
    def quiet(_context):
        return None

    weekly = dg.ScheduleDefinition(
        name="weekly", cron_schedule="0 3 * * 1", job=job, default_status=dg.DefaultScheduleStatus.RUNNING
    )
    defs = dg.Definitions(jobs=[job], schedules=[weekly], sensors=[quiet])
    assert describe_automations(defs) == [
        "[on] weekly: every Monday at 03:00 UTC, runs j",
        "[off] quiet (checked every 45 s): Watches nothing.",
    ]
    assert describe_automations(defs, {"weekly": False, "quiet": False})[0] == (
        "[off: turned off in the UI, on by default] weekly: every Monday at 03:00 UTC, runs j"
    )
    assert ui_url("0.0.0.0", 3001) == "http://127.0.0.1:3001"


# --- end to end -------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(marker: bytes) -> dict[int, str]:
    """Live processes (not zombies) whose environment holds `marker`: pid -> command line."""
    found = {}
    for env in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in env.read_bytes().split(b"\0"):
                proc = env.parent
                if (proc / "stat").read_text().rpartition(")")[2].split()[0] not in {"Z", "X"}:
                    found[int(proc.name)] = (
                        (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
                    )
    return found


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if p)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
def test_sigterm_stops_dagster_dev_and_every_process_it_started(tmp_path):
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    (tmp_path / "tiny_defs.py").write_text("import dagster as dg\n\ndefs = dg.Definitions()\n")
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - python_file:\n      relative_path: tiny_defs.py\n      working_directory: {tmp_path}\n"
    )
    env = {
        **os.environ,
        "PREFSCALE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "PREFSCALE_RECIPE": "embedded",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PYTHONWARNINGS": "ignore",
    }
    env.pop("PREFSCALE_DAGSTER_URL", None)
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    port = _free_port()
    log = tmp_path / "ui.log"
    command = [sys.executable, "-m", "sensors.ui", "--port", str(port), "--workspace", str(workspace)]
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5).read()
                break
            assert launcher.poll() is None, f"the launcher exited early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"no webserver after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            )
            time.sleep(1)
        text = log.read_text()
        assert f"the Dagster UI will be at http://127.0.0.1:{port}" in text
        assert "[on] weekly_refresh_schedule: every Monday at 03:00 UTC" in text
        started = _processes_of(marker)
        (dev,) = [pid for pid, cmd in started.items() if " dagster dev " in cmd]
        assert os.getpgid(dev) != os.getpgid(launcher.pid)  # its own group: the launcher forwards signals
        assert _environ(dev)["PREFSCALE_DAGSTER_URL"] == f"http://127.0.0.1:{port}"
        assert any("dagster_webserver" in cmd for cmd in started.values())
        assert any("dagster._daemon" in cmd for cmd in started.values())

        t0 = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        rc = launcher.wait(timeout=STOP_TIMEOUT_S)
        took = time.monotonic() - t0
        assert rc == 128 + signal.SIGTERM
        time.sleep(0.5)
        left = _processes_of(marker)
        assert not left, f"left running after the launcher exited ({took:.0f} s): {left}"
        assert "SIGTERM received; stopping dagster dev" in log.read_text()
    finally:
        for pid in _processes_of(marker):  # only what this test started carries its DAGSTER_HOME
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
