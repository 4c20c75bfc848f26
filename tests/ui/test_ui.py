"""The Dagster UI in a real browser: `dagster dev` on a free loopback port, driven by headless Chromium.

The test opens the global asset graph, then the page of `eval_prompts` (cheap: no model) and clicks its
"Materialize" button, waits for the run to succeed (GraphQL at /graphql), checks the asset's page no longer
reads "Never materialized", then saves a screenshot of the whole asset graph with every group expanded.

The screenshot is written to the test's tmp folder. `docs/ui-asset-graph.png` is written too when it is
missing, or when UPDATE_UI_SCREENSHOT=1, so ordinary runs leave the committed image untouched.

It skips (with the reason) when Chromium, chromedriver or selenium is missing: `make test` installs the
Debian packages where it can (`make ui-deps`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("PREFSCALE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PREFSCALE_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = ROOT / "docs" / "ui-asset-graph.png"
ASSET = "eval_prompts"
START_TIMEOUT_S = 150  # webserver up and the code location loaded (~50 s on 2 cores: torch, dbt parse)
RUN_TIMEOUT_S = 120
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=2560,2200",
]
# What the Makefile exports for `make ui`: everything offline and quiet.
OFFLINE_ENV = {
    "PREFSCALE_RECIPE": "embedded",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}


def _missing_browser() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} not found: install the Debian package {package} (`make ui-deps` as root)"
    return None


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # the server is still starting, the element not rendered yet, ...
            last_error = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDev:
    url: str
    log: Path
    proc: subprocess.Popen

    def log_tail(self, n: int = 60) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=15) as resp:
            out = json.loads(resp.read())
        if out.get("errors"):
            raise RuntimeError(f"GraphQL errors: {out['errors']}")
        return out["data"]

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUNS_QUERY = """{ runsOrError { ... on Runs { results { runId status assetSelection { path } } } } }"""
RUN_ERRORS_QUERY = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename ... on MessageEvent { message } ... on EngineEvent { error { message } }
  ... on ExecutionStepFailureEvent { error { message } } } } } }"""


def _default_signals() -> None:
    """In the child: SIGINT/SIGTERM back to their defaults. A shell that runs pytest in the background
    ignores SIGINT, and an ignored signal is inherited: `dagster dev` would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the whole process group (webserver, daemon, code server, run workers), then harder."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; make sure nothing of the group outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    home = tmp_path_factory.mktemp("ui_prefscale_home")
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "PREFSCALE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        # dagster-dbt's `dbt parse` in dev mode looks for `dbt` on PATH: the venv's
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    port = free_port()
    log = home / "dagster-dev.log"
    cmd = [str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole below
            preexec_fn=_default_signals,
        )
    dev = DagsterDev(url=f"http://127.0.0.1:{port}", log=log, proc=proc)
    try:

        def server_up() -> bool:
            dev.alive()
            with urllib.request.urlopen(f"{dev.url}/server_info", timeout=5) as resp:
                return resp.status == 200

        def location_loaded() -> bool:
            dev.alive()
            (entry,) = dev.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            if entry["loadStatus"] != "LOADED":
                return False
            loaded = entry["locationOrLoadError"]
            if loaded["__typename"] == "PythonError":
                pytest.fail(f"the code location failed to load: {loaded['message']}\n{dev.log_tail()}")
            return True

        started = time.monotonic()
        wait_for(server_up, START_TIMEOUT_S, f"{dev.url}/server_info")
        wait_for(location_loaded, START_TIMEOUT_S - (time.monotonic() - started), "the code location")
        yield dev
    finally:
        _stop(proc)


@pytest.fixture
def browser(dagster_dev: DagsterDev) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _dismiss_community_dialog(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        if button.is_displayed():
            button.click()


def _run_for(dev: DagsterDev, asset: str) -> dict | None:
    runs = dev.graphql(RUNS_QUERY)["runsOrError"]["results"]
    return next((r for r in runs if [asset] in [s["path"] for s in r["assetSelection"] or []]), None)


def _run_errors(dev: DagsterDev, run_id: str) -> str:
    events = dev.graphql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"]["events"]
    return "\n".join(
        (e.get("error") or {}).get("message") or e.get("message") or ""
        for e in events
        if e.get("error") or "Failure" in e["__typename"]
    )


def test_materialize_from_the_asset_graph(dagster_dev: DagsterDev, browser: Any, tmp_path: Path) -> None:
    try:
        drive_the_ui(dagster_dev, browser, tmp_path)
    except BaseException:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        print(f"screenshot of the page at the failure: {tmp_path / 'failure.png'}")
        raise


def drive_the_ui(dev: DagsterDev, driver: Any, tmp_path: Path) -> None:
    """Graph → asset page → "Materialize" → run succeeds → page shows it → screenshot of the whole graph."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def visible(by: str, value: str) -> Any:
        _dismiss_community_dialog(driver)
        found = [e for e in driver.find_elements(by, value) if e.is_displayed()]
        return found[0] if found else None

    # 1. The global asset graph, with the asset groups of the code location.
    driver.get(f"{dev.url}/asset-groups")
    wait_for(lambda: visible(By.CSS_SELECTOR, "div[title='data']"), 90, "the asset graph's groups")

    # 2. The cheap asset's page (what a click on its node opens), then its "Materialize" button. Typing a
    #    selection into the graph's filter box races CodeMirror's autocomplete on a loaded machine.
    driver.get(f"{dev.url}/assets/{ASSET}")
    xpath = "//button[normalize-space()='Materialize']"

    def enabled_button() -> Any:
        button = visible(By.XPATH, xpath)
        return button if button is not None and button.is_enabled() else None

    # The button renders before the page has loaded the asset's definition; a click then does nothing, so
    # the run itself (GraphQL) is what tells the click took. Click again, at most twice more, until it has.
    run = None
    for _attempt in range(3):
        wait_for(enabled_button, 90, f"the {ASSET} page's 'Materialize' button").click()
        with contextlib.suppress(pytest.fail.Exception):
            run = wait_for(lambda: _run_for(dev, ASSET), 20, f"a run of {ASSET}")
        if run:
            break
        driver.save_screenshot(str(tmp_path / f"no-run-after-click-{_attempt}.png"))
    assert run, f"three clicks on 'Materialize' launched no run of {ASSET} (screenshots in {tmp_path})"

    # 3. The run succeeds (GraphQL).
    def finished() -> dict | None:
        dev.alive()
        r = _run_for(dev, ASSET)
        return r if r and r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} else None

    run = wait_for(finished, RUN_TIMEOUT_S, f"run {run['runId']} to finish", interval=2)
    assert run["status"] == "SUCCESS", (
        f"run {run['runId']} ended {run['status']}:\n{_run_errors(dev, run['runId'])}\n{dev.log_tail()}"
    )

    # The asset's page shows the materialization (its "Latest materialization" no longer reads "Never").
    driver.get(f"{dev.url}/assets/{ASSET}")
    wait_for(
        lambda: visible(By.XPATH, "//*[normalize-space()='Latest materialization']")
        and not visible(By.XPATH, "//*[normalize-space()='Never materialized']"),
        60,
        f"the {ASSET} page to show the materialization",
    )

    # 4. The whole asset graph, for the README: every group expanded (graph settings → "Expand all groups").
    driver.get(f"{dev.url}/asset-groups")
    wait_for(lambda: visible(By.CSS_SELECTOR, "div[title='warehouse']"), 60, "the asset graph")

    def expand_all_groups() -> bool:
        """Click "Expand all groups" in the graph's settings menu, opening the menu first when it is not shown.
        Polled by `wait_for`: a re-render between finding and clicking (a stale element) is tried again."""
        item = visible(By.XPATH, "//*[normalize-space(text())='Expand all groups']")
        if item is None:  # the graph's gear, not the navigation's
            gears = driver.find_elements(By.CSS_SELECTOR, "button div[role=img][aria-label=settings]")
            if gears:
                gears[-1].find_element(By.XPATH, "./ancestor::button[1]").click()
            return False
        item.click()
        return True

    wait_for(expand_all_groups, 60, "'Expand all groups' in the graph's settings")
    # Expanded, the groups show their assets' nodes (the menu may or may not have closed by then).
    wait_for(
        lambda: visible(By.XPATH, "//*[normalize-space(text())='dpo_checkpoint']"), 60, "the groups to expand"
    )
    if visible(By.XPATH, "//*[normalize-space(text())='Collapse all groups']"):
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # close the menu
    # The expanded layout is larger than the view it was fitted to: reload (the UI keeps the groups expanded)
    # so the graph is fitted to the window again.
    driver.refresh()
    wait_for(
        lambda: visible(By.XPATH, "//*[normalize-space(text())='dpo_checkpoint']"), 60, "the graph to reload"
    )
    time.sleep(2)  # the layout animates into place
    shot = tmp_path / SCREENSHOT.name
    assert driver.save_screenshot(str(shot)), "Chromium did not write the screenshot"
    assert shot.stat().st_size > 10_000
    if not SCREENSHOT.exists() or os.environ.get("UPDATE_UI_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
