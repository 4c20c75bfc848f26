"""`make ui`: end the runs a killed process left behind, say what runs by itself, start `dagster dev`, stop it all.

Run as `python -m sensors.ui [--host H] [--port P]` from the repository root (the Makefile `exec`s it, so it is
make's own child). In order:

1. `sensors.recovery` ends the runs whose process died (they would hold the `gpu` pool).
2. It prints the UI's address and the automations, read from `definitions.defs`: cadence, and on or off (the
   default unless turned on or off in the UI, which the instance keeps), e.g. `[on] weekly_refresh_schedule:
   every Monday at 03:00 UTC, runs alignment_iteration_job`.
3. It starts `dagster dev` (webserver, daemon, code server) in a process group of its own, with
   PREFSCALE_DAGSTER_URL set to the UI's address unless it is set already (a proxy's address, say), so the
   MLflow runs it makes link back to their Dagster run, and the interpreter's folder first on PATH (in `dagster
   dev`, dagster-dbt runs the `dbt` it finds there: the venv's).
4. SIGINT (Ctrl-C), SIGTERM and SIGHUP are forwarded to that whole group as SIGINT, the way a terminal's Ctrl-C
   reaches `dagster dev` and its children; after `STOP_GRACE_S` (or at a second Ctrl-C) the group gets
   SIGTERM, then SIGKILL. It exits only when no process of the group is left, with 128 + the signal's number.

GNU make forwards a SIGTERM it receives to its children, so `kill <make pid>` reaches this process; so does a
signal to make's process group. Where the platform allows it (Linux), this process also gets SIGTERM when its
parent dies, even by SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 40.0  # dagster dev waits for its webserver and daemon, which stop their code servers and runs
TERM_GRACE_S = 10.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


# --- what runs by itself --------------------------------------------------------------------------------------


def describe_cron(cron: str, timezone: str | None) -> str:
    """`0 3 * * 1` -> `every Monday at 03:00 UTC`; other forms are shown as the cron string itself."""
    tz = timezone or "UTC"  # Dagster's default execution timezone
    fields = cron.split()
    if len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit() and fields[2:4] == ["*", "*"]:
        at = f"{int(fields[1]):02d}:{int(fields[0]):02d} {tz}"
        dow = fields[4]
        if dow == "*":
            return f"every day at {at}"
        if dow.isdigit() and int(dow) <= 7:
            return f"every {DAYS[int(dow) % 7]} at {at}"
    return f"on cron `{cron}` ({tz})"


def _first_sentence(text: str | None) -> str:
    text = " ".join((text or "").split())
    head, dot, _ = text.partition(". ")
    return head + ("." if dot or not head.endswith(".") else "") if head else ""


def _status(name: str, default_on: bool, toggled: Mapping[str, bool]) -> str:
    on = toggled.get(name, default_on)
    if on == default_on:
        return "on" if on else "off"
    return f"{'on' if on else 'off'}: turned {'on' if on else 'off'} in the UI, {'on' if default_on else 'off'} by default"


def describe_automations(defs: Any, toggled: Mapping[str, bool] | None = None) -> list[str]:
    """One line per schedule and sensor of `defs`: on or off (its default, unless `toggled` in the UI: name ->
    running), name, cadence, what it does."""
    import dagster as dg

    toggled = toggled or {}
    lines = []
    for s in defs.schedules or []:
        status = _status(s.name, s.default_status == dg.DefaultScheduleStatus.RUNNING, toggled)
        when = describe_cron(str(s.cron_schedule), s.execution_timezone)
        lines.append(f"[{status}] {s.name}: {when}, runs {s.job_name}")
    for s in defs.sensors or []:
        status = _status(s.name, s.default_status == dg.DefaultSensorStatus.RUNNING, toggled)
        about = _first_sentence(s.description)
        lines.append(
            f"[{status}] {s.name} (checked every {s.minimum_interval_seconds} s){': ' + about if about else ''}"
        )
    return lines


def toggled_in_ui(instance: Any) -> dict[str, bool]:
    """Schedules and sensors turned on or off in the UI (stored in the instance): name -> running."""
    from dagster._core.scheduler.instigation import InstigatorStatus

    explicit = {InstigatorStatus.RUNNING: True, InstigatorStatus.STOPPED: False}
    return {st.name: explicit[st.status] for st in instance.all_instigator_state() if st.status in explicit}


def banner(url: str, automations: Iterable[str]) -> str:
    lines = [
        f"prefscale: the Dagster UI will be at {url} (Ctrl-C stops the UI, its daemon and code server)",
        "Automations (the daemon runs those on; Dagster UI > Automation turns one on or off):",
        *(f"  - {line}" for line in automations),
        "MLflow runs made from here link back to their Dagster run; `make mlflow-ui` serves the MLflow UI.",
    ]
    return "\n".join(lines)


def load_automations() -> list[str]:
    """The automations of `definitions.defs`, with the toggles stored in the instance (DAGSTER_HOME) when any."""
    import dagster as dg

    import definitions

    toggled: dict[str, bool] = {}
    # no instance yet, or a storage that cannot say: the defaults then
    with contextlib.suppress(Exception), dg.DagsterInstance.get() as instance:
        toggled = toggled_in_ui(instance)
    return describe_automations(definitions.defs, toggled)


# --- the process group ------------------------------------------------------------------------------------------


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies left unreaped by the system do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in {"Z", "X"}:
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group(child: subprocess.Popen, pgid: int, timeout: float, hurry: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not hurry():
        child.poll()
        if child.returncode is not None and not group_alive(pgid):
            return True
        time.sleep(0.2)
    return False


def stop_group(
    child: subprocess.Popen,
    grace: float = STOP_GRACE_S,
    term_grace: float = TERM_GRACE_S,
    hurry: Callable[[], bool] = lambda: False,
) -> None:
    """SIGINT to `child`'s process group (as a Ctrl-C would), SIGTERM after `grace` s, SIGKILL after `term_grace`
    s more; `hurry()` true (another Ctrl-C) moves on to the next signal at once. Returns when the group is gone."""
    pgid = child.pid
    for sig, wait_s in ((signal.SIGINT, grace), (signal.SIGTERM, term_grace), (signal.SIGKILL, 10.0)):
        _signal_group(pgid, sig)
        if _wait_group(child, pgid, wait_s, hurry):
            return
        print(
            f"prefscale ui: process group {pgid} still running after {signal.Signals(sig).name}",
            file=sys.stderr,
        )


def _child_setup() -> None:
    # default dispositions: a shell that started make in the background ignores SIGINT, and that is inherited
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)


def _die_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent (make) dies, even by SIGKILL. Not armed under init."""
    parent = os.getppid()
    if not sys.platform.startswith("linux") or parent <= 1:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def ui_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in {"", "0.0.0.0", "::"} else host
    return f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"


def run(host: str, port: int, workspace: str, extra: list[str]) -> int:
    from sensors import recovery

    received: list[int] = []
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if child is None:
            raise KeyboardInterrupt  # still starting: nothing to forward to

    for sig in FORWARDED:
        signal.signal(sig, on_signal)
    try:
        _die_with_parent()
        recovery.main()
        url = ui_url(host, port)
        print(banner(url, load_automations()), flush=True)
        env = dict(os.environ)
        env.setdefault("PREFSCALE_DAGSTER_URL", url)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        command = [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-h",
            host,
            "-p",
            str(port),
            "-w",
            workspace,
            *extra,
        ]
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_child_setup,
        )
    except KeyboardInterrupt:
        return 128 + (received[0] if received else signal.SIGINT)
    while child.poll() is None and not received:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)
    if received:
        name = signal.Signals(received[0]).name
        print(
            f"\nprefscale ui: {name} received; stopping dagster dev (process group {child.pid})",
            file=sys.stderr,
        )
    seen = len(received)
    stop_group(child, hurry=lambda: len(received) > seen)  # also when dagster dev exited by itself
    print("prefscale ui: stopped", file=sys.stderr)
    return 128 + received[0] if received else (child.returncode or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sensors.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--workspace", default="workspace.yaml")
    parser.add_argument("--print-only", action="store_true", help="print the automations and exit")
    args, extra = parser.parse_known_args(argv)
    if args.print_only:
        print(banner(ui_url(args.host, args.port), load_automations()))
        return 0
    return run(args.host, args.port, args.workspace, extra)


if __name__ == "__main__":
    sys.exit(main())
