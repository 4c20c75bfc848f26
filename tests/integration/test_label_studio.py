"""SMEs in a real Label Studio: tasks pushed by Dagster, rankings and blind votes submitted through its API as an SME
would, the sensor, gold, re-labeling, the `sme` judge in the leaderboard, and a screenshot of the ranking screen.

Label Studio runs from its own virtualenv (`make annotate-install`; `make test` builds it) on a free loopback
port, with its data in the test's tmp folder; the first start migrates its database (about two minutes on 2
cores). The Dagster side runs on a copy of the session `pipeline`'s home with an instance of its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from prefscale.annotation import server
from prefscale.annotation.collect import tool_state
from prefscale.annotation.label_studio import LabelStudio
from prefscale.annotation.pairwise import PAIRWISE_PROJECT
from prefscale.annotation.ranking import RANKING_PROJECT
from prefscale.config.recipe import deep_merge
from prefscale.evaluation.judges.sme import text_sha256
from prefscale.storage import ArtifactStore
from resources import default_resources
from sensors.annotations import annotations_decision

pytestmark = [pytest.mark.integration, pytest.mark.annotation]

ROOT = Path(__file__).resolve().parents[2]
EXECUTABLE = Path(
    os.environ.get("PREFSCALE_LABEL_STUDIO", ROOT / ".venv-label-studio" / "bin" / "label-studio")
)
CHROMIUM = Path(os.environ.get("PREFSCALE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PREFSCALE_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOT = ROOT / "docs" / "annotation-ranking.png"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if not EXECUTABLE.is_file():
        pytest.skip(f"no Label Studio at {EXECUTABLE}: `make annotate-install` (make test builds it)")
    folder = tmp_path_factory.mktemp("label_studio")
    port = server.free_port()
    srv = server.start(EXECUTABLE, folder, port=port)
    try:
        key = server.api_key(folder, srv.url)
        yield srv, key, folder
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def sme_home(pipeline, label_studio, tmp_path_factory):
    srv, key, _ = label_studio
    home = tmp_path_factory.mktemp("sme_home") / "home"
    shutil.copytree(pipeline.home, home, symlinks=True, ignore=shutil.ignore_patterns("dagster"))
    (home / "dagster").mkdir()
    recipe = pipeline.resources["recipe"]
    overrides = deep_merge(
        json.loads(recipe.overrides_json or "{}"), {"evaluation": {"judges": ["rubric", "sme"]}}
    )
    saved = {k: os.environ.get(k) for k in ("PREFSCALE_HOME", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY")}
    os.environ.update({"LABEL_STUDIO_URL": srv.url, "LABEL_STUDIO_API_KEY": key})
    try:
        resources = default_resources(
            home=str(home), recipe=recipe.name, overrides_json=json.dumps(overrides)
        )
        with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
            yield dataclasses.replace(pipeline, home=home, instance=instance, resources=resources)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _project(client: LabelStudio, title: str) -> int:
    return next(int(p["id"]) for p in client.projects() if p["title"] == title)


def _ranking_result(order: list[str]) -> list[dict]:
    return [
        {
            "from_name": "rank",
            "to_name": "responses",
            "type": "ranker",
            "value": {"ranker": {"responses": order}},
        }
    ]


def _listening_address(port: int) -> str:
    """The local address the process listening on `port` bound (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            return ".".join(str(int(addr[k : k + 2], 16)) for k in (6, 4, 2, 0))
    return ""


def test_smes_rank_and_vote_in_label_studio(sme_home, label_studio, tmp_path):
    srv, key, ls_folder = label_studio
    p = sme_home
    store = ArtifactStore(p.home)
    client = LabelStudio(srv.url, key)
    folder = p.home / "annotations"
    keys = ["1", "2", "3"]
    assert _listening_address(int(srv.url.rsplit(":", 1)[1])) == "127.0.0.1"

    # this instance is new: give it iteration 1's label matrix, as a run of the loop would have
    assert p.materialize(["lf_votes", "quality_labels"], partition="1").success

    # 1. annotation_tasks pushes the uncertain prompts, idempotently
    run_config = {"ops": {"annotation_tasks": {"config": {"tasks": 3, "random_share": 0.34}}}}

    def push() -> dg.ExecuteInProcessResult:
        return dg.materialize(
            p.assets,
            selection=["annotation_tasks"],
            partition_key="1",
            resources=p.resources,
            instance=p.instance,
            run_config=run_config,
        )

    assert push().success
    project = _project(client, RANKING_PROJECT)
    tasks = list(client.tasks(project))
    assert len(tasks) == 3
    assert sorted(t["data"]["reason"] for t in tasks) == ["random", "uncertain", "uncertain"]
    again = push()
    assert again.success
    assert len(list(client.tasks(project))) == 3  # no duplicate task
    meta = again.asset_materializations_for_node("annotation_tasks")[0].metadata
    assert meta["new_tasks"].value == 0 and meta["already_there"].value == 3

    # 2. an SME ranks two prompts (reverse order of the items shown, then the shown order)
    ranked = {}
    for t, flip in zip(tasks[:2], (True, False), strict=True):
        order = [it["id"] for it in t["data"]["items"]]
        order = order[::-1] if flip else order
        client.annotate(t["id"], _ranking_result(order))
        ranked[t["data"]["prompt_id"]] = order

    cursor = annotations_decision(p.instance, folder, None, keys).cursor
    tick = annotations_decision(p.instance, folder, cursor, keys, tool_state(client, [RANKING_PROJECT]))
    assert [r.job_name for r in tick.run_requests] == ["sme_annotations_job"]
    result = p.materialize(["sme_annotations"])
    assert result.success
    gold = store.read_frame("sme_annotations", "all")
    expected = {}
    for order in ranked.values():
        half = len(order) // 2
        expected |= {c: 1 for c in order[:half]} | {c: 0 for c in order[len(order) - half :]}
    assert dict(zip(gold["candidate_id"], gold["label"], strict=True)) == expected
    assert set(gold["annotator"]) == {server.credentials(ls_folder)[0]}
    assert set(gold["file"]) == {f"label-studio:{RANKING_PROJECT}"}

    # the sensor's next tick re-labels iteration 1 with the new gold
    tick = annotations_decision(p.instance, folder, tick.cursor, keys, tool_state(client, [RANKING_PROJECT]))
    assert [(r.job_name, r.partition_key) for r in tick.run_requests] == [("alignment_iteration_job", "1")]
    assert p.materialize(["quality_labels"], partition="1").success
    analysis = store.read_frame("quality_labels", "1", "analysis")
    assert set(analysis["n_gold"]) == {len(expected)}
    metrics = store.read_frame("quality_labels", "1", "gold_metrics")
    assert set(metrics["n_gold"]) == {len(expected)}

    # 3. a malformed annotation (two of the responses ordered) is rejected with its task id; nothing is published
    version = store.current("sme_annotations", "all").version
    bad_task = tasks[2]
    bad = client.annotate(bad_task["id"], _ranking_result([it["id"] for it in bad_task["data"]["items"]][:2]))
    res = dg.materialize(
        p.assets,
        selection=["sme_annotations"],
        resources=p.resources,
        instance=p.instance,
        raise_on_error=False,
    )
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"task {bad_task['id']}: annotation {bad}" in str(failure.event_specific_data.error)
    assert store.current("sme_annotations", "all").version == version
    client.request("DELETE", f"/api/annotations/{bad}")

    # 4. blind pairwise votes become the sme judge, in the leaderboard
    assert dg.materialize(
        p.assets,
        selection=["sme_eval_tasks"],
        partition_key="1",
        resources=p.resources,
        instance=p.instance,
        run_config={"ops": {"sme_eval_tasks": {"config": {"pairs": 3}}}},
    ).success
    pairs = list(client.tasks(_project(client, PAIRWISE_PROJECT)))
    assert len(pairs) == 3
    wanted = []
    for k, t in enumerate(pairs):
        model_side = "A" if text_sha256(t["data"]["a"]) == t["data"]["model_sha256"] else "B"
        ref_side = "B" if model_side == "A" else "A"
        pick, pref = [(f"{model_side} is better", 1.0), ("Tie", 0.5), (f"{ref_side} is better", 0.0)][k % 3]
        client.annotate(
            t["id"],
            [
                {
                    "from_name": "preference",
                    "to_name": "prompt",
                    "type": "choices",
                    "value": {"choices": [pick]},
                }
            ],
        )
        wanted.append(pref)
    assert p.materialize(["sme_annotations"]).success
    assert store.read_frame("sme_annotations", "all", "votes").height == 3
    assert p.materialize(["alpaca_eval_results"], partition="1").success
    assert p.materialize("warehouse").success
    with duckdb.connect(str(p.home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.sql(
            "select win_rate, n_total, standard_error from eval_leaderboard "
            "where judge = 'sme' and iteration = 1 and variant = 'checkpoint'"
        ).fetchall()
    assert len(rows) == 1 and rows[0][1] == 3 and rows[0][2] is not None
    row = rows[0]
    assert row[0] == pytest.approx(sum(wanted) / len(wanted))

    # 5. the API key is in no artifact, run log or server log
    needle = key.encode()
    leaks = [
        str(f)
        for base in (p.home, ls_folder)
        for f in base.rglob("*")
        if f.is_file() and f.name != server.API_KEY_FILE and needle in f.read_bytes()
    ]
    assert not leaks, f"the API key appears in {leaks}"
    logs = p.instance.all_logs(result.run_id)
    assert not any(key in (e.user_message or "") for e in logs)


def test_screenshot_of_the_ranking_screen(label_studio, tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("no /usr/bin/chromium or chromedriver (`make ui-deps`)")
    selenium = pytest.importorskip("selenium")
    del selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from prefscale.annotation.ranking import ranking_config, ranking_tasks

    srv, key, folder = label_studio
    client = LabelStudio(srv.url, key)
    project = client.ensure_project("prefscale: screenshot", ranking_config(5))
    fixture = json.loads((ROOT / "tests" / "fixtures" / "annotation" / "embedded_prompt.json").read_text())
    cands = pl.DataFrame(fixture["candidates"])
    sel = pl.DataFrame({"prompt_id": [cands["prompt_id"][0]], "reason": ["uncertain"]})
    client.push_new(project, ranking_tasks(cands, sel, iteration="1", candidates_version="docs"))
    task = next(client.tasks(project))
    user, password = server.credentials(folder)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        driver.get(f"{srv.url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(user)
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{srv.url}/projects/{project}/data?task={task['id']}")
        WebDriverWait(driver, 120).until(
            ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Response 1')]"))
        )
        time.sleep(3)  # fonts and layout settle
        shot = tmp_path / SCREENSHOT.name
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
        if not SCREENSHOT.exists() or os.environ.get("UPDATE_UI_SCREENSHOT") == "1":
            shutil.copy(shot, SCREENSHOT)
    finally:
        driver.quit()
