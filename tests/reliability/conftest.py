"""The reliability suite (`pytest -m reliability`): every test under tests/reliability/ carries the marker.

`faulted_home` is one small home taken through bootstrap and iteration 1 the hard way: each model-using step
and the dbt build is first started in a process of its own (`run_small.py`) and SIGKILLed, with its children,
once the step is under way; then it is materialized again in this process. The fault tests read what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest

from prefscale.config.recipe import deep_merge
from prefscale.storage import TEMP_PREFIX, ArtifactStore
from prefscale.training.dpo import last_complete_checkpoint
from tests.integration.conftest import SMALL

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RUNNER = HERE / "run_small.py"
SECRET = f"sk-reliability-{uuid.uuid4().hex}"
# A checkpoint after every optimizer step, so the killed trainer leaves one to resume from.
OVERRIDES = {"dpo": {"save_steps": 1, "per_device_train_batch_size": 2}}
START_TIMEOUT_S = 300


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.reliability)


@dataclass
class Kill:
    """What happened to one step: the killed run, then the re-run."""

    step: str
    killed: bool = False
    returncode: int | None = None
    log: str = ""
    versions_after_kill: list[str] = field(default_factory=list)
    rerun: dg.ExecuteInProcessResult | None = None
    versions_after_rerun: list[str] = field(default_factory=list)
    temps_after_rerun: list[str] = field(default_factory=list)


@dataclass
class FaultedHome:
    home: Path
    kills: dict[str, Kill]
    materialize: Callable[..., dg.ExecuteInProcessResult]
    results: list[dg.ExecuteInProcessResult]
    assets: list
    resources: dict


def runner_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFSCALE_HOME=str(home),
        OPENAI_API_KEY=SECRET,
        RELIABILITY_OVERRIDES=json.dumps(OVERRIDES),
        PYTHONPATH=str(REPO),
        PREFSCALE_DTYPE="float32",
    )
    return env


def start_runner(
    home: Path, selection: str, partition: str | None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`run_small.py` in a session of its own (so the whole group can be killed), output merged on stdout;
    `env` is added to `runner_env(home)`."""
    args = [sys.executable, str(RUNNER), str(home), selection, *([partition] if partition else [])]
    return subprocess.Popen(
        args,
        env={**runner_env(home), **(env or {})},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_to_end(
    home: Path, selection: str, partition: str | None, env: dict[str, str] | None = None
) -> tuple[str, int]:
    """`run_small.py` to its end: (its output, its exit code)."""
    proc = start_runner(home, selection, partition, env)
    return proc.communicate(timeout=600)[0], proc.returncode


def kill_during(
    home: Path,
    selection: str,
    partition: str | None,
    step: str,
    ready: Callable[[], bool] | None = None,
    delay_s: float = 0.3,
) -> tuple[bool, int, str]:
    """Run `selection`; once `step` has started (and `ready()` holds), SIGKILL the process group."""
    proc = start_runner(home, selection, partition)
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if f'Started execution of step "{step}"' in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if started.is_set() and (ready is None or ready()):
            time.sleep(delay_s)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            break
        time.sleep(0.02)
    else:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rc = proc.wait()
    reader.join(timeout=10)
    return killed, rc, "".join(lines)


def temps(slot: Path) -> list[str]:
    return sorted(p.name for p in slot.iterdir() if p.name.startswith(TEMP_PREFIX)) if slot.is_dir() else []


def _checkpoint_saved(work_root: Path) -> Callable[[], bool]:
    def ready() -> bool:
        return work_root.is_dir() and any(
            last_complete_checkpoint(w) is not None for w in work_root.iterdir() if w.is_dir()
        )

    return ready


# (the step killed, what runs before it, its partition)
KILLED_STEPS: list[tuple[str, list[str], str | None]] = [
    ("base_policy", [], None),
    ("candidates", ["eval_prompts", "eval_baseline", "prompts"], "1"),
    ("dpo_checkpoint", ["lf_votes", "quality_labels", "reward_scores", "preference_pairs"], "1"),
    ("eval_results", [], "1"),
    ("best_of_n", [], "1"),
    ("warehouse", ["alpaca_eval_results"], "1"),
]
UNPARTITIONED_ASSETS = {"base_policy", "eval_prompts", "eval_baseline", "warehouse"}


@pytest.fixture(scope="session")
def faulted_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultedHome]:
    home = tmp_path_factory.mktemp("reliability_home")
    saved = {k: os.environ.get(k) for k in ("PREFSCALE_HOME", "OPENAI_API_KEY")}
    os.environ["OPENAI_API_KEY"] = SECRET
    import definitions
    from resources import default_resources

    resources = default_resources(
        home=str(home), recipe="embedded", overrides_json=json.dumps(deep_merge(SMALL, OVERRIDES))
    )
    assets = list(definitions.defs.assets)
    results: list[dg.ExecuteInProcessResult] = []

    def materialize(selection: list[str] | str, partition: str | None = None) -> dg.ExecuteInProcessResult:
        sel = (
            dg.AssetSelection.groups("warehouse")
            if selection == "warehouse"
            else dg.AssetSelection.assets(*selection)
        )
        result = dg.materialize(
            assets, selection=sel, partition_key=partition, resources=resources, raise_on_error=False
        )
        results.append(result)
        return result

    store = ArtifactStore(home)
    kills: dict[str, Kill] = {}
    try:
        for asset, before, partition in KILLED_STEPS:
            for a in before:
                r = materialize([a], None if a in UNPARTITIONED_ASSETS else partition)
                assert r.success, f"preparing {a} failed"
            part = None if asset in UNPARTITIONED_ASSETS else partition
            k = Kill(step=asset)
            step = "warehouse_models" if asset == "warehouse" else asset
            ready = _checkpoint_saved(home / "work" / asset / "1") if asset == "dpo_checkpoint" else None
            k.killed, k.returncode, k.log = kill_during(home, asset, part, step, ready)
            slot = store.root / asset / (part or "all")
            k.versions_after_kill = store.versions(asset, part or "all")
            k.rerun = materialize("warehouse" if asset == "warehouse" else [asset], part)
            k.versions_after_rerun = store.versions(asset, part or "all")
            k.temps_after_rerun = temps(slot)
            kills[asset] = k
        yield FaultedHome(home, kills, materialize, results, assets, resources)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
