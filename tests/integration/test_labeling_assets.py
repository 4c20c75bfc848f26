"""The labeling assets through Dagster: broken functions fail `lf_votes` cleanly, SME gold flows in by sensor.

Most tests use a tiny home of their own (candidates written straight into a temporary ArtifactStore, the text
functions only), so they run in seconds; the last one reads what the shared `pipeline` run produced.
"""

from __future__ import annotations

import json
import random

import dagster as dg
import duckdb
import polars as pl
import pytest
from scipy.stats import spearmanr

from prefscale.data import domain
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.storage import ArtifactStore
from sensors.annotations import annotations_decision

pytestmark = pytest.mark.integration

FIX = "tests.fixtures.labeling.python_lfs"
KEYS = ["1", "2", "3"]
TEXT_ONLY = {"labeling": {"model_functions": []}}  # no base policy in the tiny home


def write_candidates(store: ArtifactStore, partition: str, n_prompts: int = 4, n: int = 3) -> pl.DataFrame:
    pool = domain.make_prompt_pool(40, int(partition)).head(n_prompts)
    rng = random.Random(int(partition))
    rows = [
        {
            "candidate_id": f"{pid}-i{partition}-{k}",
            "prompt_id": f"{pid}-i{partition}",
            "sample_idx": k,
            "task_type": task,
            "prompt": prompt,
            "response": domain.make_response(prompt, task, rng),
            "n_tokens": 10,
            "finish_reason": "stop",
        }
        for pid, task, prompt in pool.iter_rows()
        for k in range(n)
    ]
    df = pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)
    store.write_frame("candidates", partition, df)
    return df


class Home:
    def __init__(self, path, instance, overrides: dict) -> None:
        from assets.annotations import sme_annotations
        from assets.labels import lf_votes, quality_labels
        from resources import default_resources

        self.path, self.instance, self.store = path, instance, ArtifactStore(path)
        self.assets = [lf_votes, quality_labels, sme_annotations]  # only what these tests run: a quick job
        self.resources = default_resources(
            home=str(path), recipe="embedded", overrides_json=json.dumps(overrides)
        )

    def materialize(self, keys: list, partition: str | None = None) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets,
            selection=dg.AssetSelection.assets(*keys),
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def run_request(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        keys = request.asset_selection or [dg.AssetKey("sme_annotations")]
        return self.materialize(keys, request.partition_key)


@pytest.fixture
def tiny_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFSCALE_HOME", str(tmp_path))  # default_resources sets it; restored afterwards
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:

        def make(overrides: dict | None = None) -> Home:
            return Home(tmp_path, instance, overrides or TEXT_ONLY)

        yield make


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()
    return event.step_failure_data.error.message


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (
            "raises_on_second_row",
            "labeling function 'fragile' raised ZeroDivisionError: cannot score this one",
        ),
        ("returns_seven_on_second_row", "labeling function 'fragile' returned 7"),
    ],
)
def test_a_broken_labeling_function_fails_lf_votes_and_writes_nothing(tiny_home, fn, expected):
    overrides = {
        "labeling": {
            "functions": [
                {"name": "lumora", "kind": "regex", "pattern": "lumora", "vote": "high"},
                {"name": "fragile", "kind": "python", "callable": f"{FIX}:{fn}", "description": "breaks"},
            ],
            "model_functions": [],
        }
    }
    home = tiny_home(overrides)
    cands = write_candidates(home.store, "1")
    result = home.materialize(["lf_votes"], "1")
    assert not result.success
    msg = failure_message(result)
    assert expected in msg
    assert f"for candidate {cands['candidate_id'][1]} (row 1)" in msg  # the first offending row
    assert home.store.versions("lf_votes", "1") == []  # no partial label matrix
    assert not (home.store.root / "lf_votes" / "1" / "current").exists()
    slot = home.store.root / "lf_votes" / "1"
    assert not slot.exists() or not [p for p in slot.iterdir() if p.name.startswith(".tmp")]
    (failure,) = result.get_step_failure_events()
    meta = failure.step_failure_data.user_failure_data.metadata
    assert meta["labeling_function"].value == "fragile" and meta["row"].value == 1


def test_reference_answers_in_the_prompt_shard_feed_reference_functions_and_the_lineage(tiny_home):
    close = {"name": "close", "kind": "reference", "high_above": 0.5, "low_below": 0.2}
    home = tiny_home({"labeling": {"model_functions": [close]}})
    cands = write_candidates(home.store, "1")
    shard = cands.select("prompt_id", "task_type", "prompt").unique("prompt_id", maintain_order=True)
    # the first prompt's reference is its first candidate's reply, the second's has none
    first = cands.group_by("prompt_id", maintain_order=True).first()
    refs = [first["response"][0], None, *first["response"][2:].to_list()]
    home.store.write_frame("prompts", "1", shard.with_columns(pl.Series("reference", refs, dtype=pl.String)))
    assert home.materialize(["lf_votes"], "1").success
    ref = home.store.current("lf_votes", "1")
    votes = pl.read_parquet(ref.file()).join(cands.select("candidate_id", "prompt_id"), on="candidate_id")
    scores = pl.read_parquet(ref.file("scores.parquet"))
    assert votes.filter(pl.col("candidate_id") == cands["candidate_id"][0])["close"].to_list() == [1]
    assert scores.filter(pl.col("candidate_id") == cands["candidate_id"][0])["close"][0] > 0.99
    assert set(votes.filter(pl.col("prompt_id") == shard["prompt_id"][1])["close"]) == {-1}  # no reference
    assert votes["candidate_id"].to_list() == cands["candidate_id"].to_list()  # row order kept
    inputs = {i["asset"] for i in home.store.manifest(ref)["inputs"]}
    assert inputs == {"candidates", "prompts"}  # the shard whose answers were read is in the lineage

    # a shard without reference answers: every row abstains, and the shard is not an input
    home.store.write_frame("prompts", "1", shard)
    assert home.materialize(["lf_votes"], "1").success
    ref = home.store.current("lf_votes", "1")
    assert set(pl.read_parquet(ref.file())["close"]) == {-1}
    assert {i["asset"] for i in home.store.manifest(ref)["inputs"]} == {"candidates"}


def test_gold_annotations_flow_through_the_sensor_into_quality_labels(tiny_home):
    home = tiny_home()
    c1, c2 = write_candidates(home.store, "1"), write_candidates(home.store, "2")
    assert home.materialize(["lf_votes", "quality_labels"], "1").success
    folder = home.path / "annotations"
    cursor = annotations_decision(home.instance, folder, None, KEYS).cursor
    before = home.store.current("quality_labels", "1").version
    analysis = pl.read_parquet(home.store.current("quality_labels", "1").file("analysis.parquet"))
    assert set(analysis["n_gold"]) == {0} and analysis["empirical_accuracy"].is_null().all()

    # An SME drops a file: labels for two responses and a ranking of one prompt, all in iteration 1.
    folder.mkdir()
    ids = c1["candidate_id"].to_list()
    lines = [
        {"candidate_id": ids[0], "label": "high"},
        {"candidate_id": ids[1], "label": "low"},
        {"prompt_id": c1["prompt_id"][3], "ranking": ids[3:6]},
    ]
    (folder / "ana.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    tick = annotations_decision(home.instance, folder, cursor, KEYS)
    (ingest,) = tick.run_requests
    result = home.run_request(ingest)
    assert result.success
    gold = home.store.read_frame("sme_annotations", "all")
    assert gold.height == 4 and set(gold["iteration"]) == {"1"}
    mat = result.asset_materializations_for_node("sme_annotations")[0]
    assert mat.metadata["affected_iterations"].value == ["1"]

    # Next tick: re-label the affected iteration only.
    tick = annotations_decision(home.instance, folder, tick.cursor, KEYS)
    (relabel,) = tick.run_requests
    assert relabel.partition_key == "1" and relabel.asset_selection == [dg.AssetKey("quality_labels")]
    result = home.run_request(relabel)
    assert result.success
    ref = home.store.current("quality_labels", "1")
    assert ref.version != before
    analysis = pl.read_parquet(ref.file("analysis.parquet"))
    assert set(analysis["n_gold"]) == {4}
    voted = analysis.filter(pl.col("gold_correct") + pl.col("gold_incorrect") > 0)
    assert voted.height and voted["empirical_accuracy"].is_between(0, 1).all()
    metrics = pl.read_parquet(ref.file("gold_metrics.parquet"))
    assert metrics["model"].to_list() == ["label_model", "majority_vote"] and metrics["n_gold"][0] == 4
    meta = result.asset_materializations_for_node("quality_labels")[0].metadata
    assert meta["gold_rows"].value == 4
    assert "gold_accuracy_label_model" in meta and "gold_f1_label_model" in meta
    assert "empirical_accuracy" in meta["lf_analysis"].value
    manifest = home.store.manifest(ref)
    assert "sme_annotations" in {i["asset"] for i in manifest["inputs"]}  # lineage of the gold used
    labels = home.store.read_frame("quality_labels", "1")
    assert labels["votes"].str.contains("@").any()  # name@version=vote
    assert not annotations_decision(home.instance, folder, tick.cursor, KEYS).run_requests

    # A malformed file: a per-line error, and nothing changes.
    gold_version = home.store.current("sme_annotations", "all").version
    bad = [
        {"candidate_id": c2["candidate_id"][0], "label": "high"},
        {"candidate_id": "ghost", "label": "low"},
    ]
    (folder / "bob.jsonl").write_text("".join(json.dumps(x) + "\n" for x in bad) + "{oops\n")
    tick = annotations_decision(home.instance, folder, tick.cursor, KEYS)
    (ingest,) = tick.run_requests
    result = home.run_request(ingest)
    assert not result.success
    msg = failure_message(result)
    assert "bob.jsonl: rejected, nothing from it was used (2 problem(s))" in msg
    assert "line 2: unknown candidate_id 'ghost'" in msg and "line 3: invalid JSON" in msg
    assert home.store.current("sme_annotations", "all").version == gold_version
    assert len(home.store.versions("sme_annotations", "all")) == 1
    assert not annotations_decision(
        home.instance, folder, tick.cursor, KEYS
    ).run_requests  # not retried as is


def build_lf_summary(home: Home) -> pl.DataFrame:
    """The lf_summary mart of `home`, built by dbt through Dagster as the warehouse step builds it."""
    from dagster_dbt import DbtCliResource

    from assets.dbt import warehouse_models
    from resources import DBT_PROJECT_DIR, StorageResource, dbt_executable

    dbt = DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )
    result = dg.materialize(
        [warehouse_models],
        selection=dg.AssetSelection.assets("lf_summary"),
        resources={"dbt": dbt, "storage": StorageResource(home=str(home.path))},
        instance=home.instance,
    )
    assert result.success
    with duckdb.connect(str(home.path / "warehouse.duckdb"), read_only=True) as con:
        return con.sql("select * from lf_summary order by lf_name").pl()


def test_gold_disables_a_function_worse_than_chance(tiny_home):
    from prefscale.config.recipe import load_recipe

    own = [f.model_dump(mode="json", exclude_none=True) for f in load_recipe("embedded").labeling.functions]
    contrarian = {"name": "contrarian", "kind": "regex", "pattern": r"\S", "vote": "high"}  # high everywhere
    labeling = {"functions": [*own, contrarian], "model_functions": []}
    home = tiny_home({"labeling": labeling})
    write_candidates(home.store, "1", n_prompts=12)
    assert home.materialize(["lf_votes"], "1").success
    votes = home.store.read_frame("lf_votes", "1")
    others = votes.select([f["name"] for f in own]).to_numpy()
    # gold says low where no other function votes high: contrarian (high everywhere) is always wrong there
    low = votes.filter(pl.Series((others != 1).all(axis=1)))["candidate_id"].to_list()
    assert len(low) >= 5
    (home.path / "annotations").mkdir()
    (home.path / "annotations" / "sme.jsonl").write_text(
        "".join(json.dumps({"candidate_id": c, "label": "low"}) + "\n" for c in low)
    )
    assert home.materialize(["sme_annotations"]).success

    def relabel(mode: str) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
        lm = {"gold_lf_filter": mode, "gold_min_votes": 5}
        run = tiny_home({"labeling": {**labeling, "label_model": lm}}).materialize(["quality_labels"], "1")
        assert run.success
        ref = home.store.current("quality_labels", "1")
        meta = run.asset_materializations_for_node("quality_labels")[0].metadata
        return pl.read_parquet(ref.file()), pl.read_parquet(ref.file("analysis.parquet")), meta

    kept, analysis, meta = relabel("off")
    action = dict(zip(analysis["lf_name"], analysis["gold_action"], strict=True))
    assert action.pop("contrarian").startswith(
        f"flagged, kept (gold_lf_filter: off): gold accuracy 0.00 on {len(low)}"
    )
    assert set(action.values()) == {None} and kept["votes"].str.contains(r"contrarian@\w+=high").all()

    labels, analysis, meta = relabel("disable")
    action = dict(zip(analysis["lf_name"], analysis["gold_action"], strict=True))
    text = action.pop("contrarian")
    assert text.startswith(f"disabled: gold accuracy 0.00 on {len(low)} rows (p=")
    assert set(action.values()) == {None}  # the others: untouched
    assert not labels["votes"].str.contains("contrarian").any()
    assert (labels["p_high"] != kept["p_high"]).any()  # the labels no longer lean on it
    assert f"- `contrarian`: {text}" in meta["gold_lf_actions"].value and text in meta["lf_analysis"].value
    params = home.store.manifest(home.store.current("quality_labels", "1"))["params"]
    assert params["gold_disabled_lfs"] == ["contrarian"] and params["gold_lf_filter"] == "disable"
    summary = build_lf_summary(home)
    assert dict(zip(summary["lf_name"], summary["gold_action"], strict=True))["contrarian"] == text
    assert summary.filter(pl.col("lf_name") != "contrarian")["gold_action"].is_null().all()


def test_pipeline_labels_with_model_functions_and_builds_lf_summary(pipeline):
    store = ArtifactStore(pipeline.home)
    for i in ("1", "2", "3"):
        ref = store.current("lf_votes", i)
        votes = pl.read_parquet(ref.file())
        assert {"llm_no_question_back", "base_perplexity"} <= set(votes.columns)
        scores = pl.read_parquet(ref.file("scores.parquet"))
        assert scores.columns == ["candidate_id", "llm_no_question_back", "base_perplexity"]
        assert scores["base_perplexity"].drop_nans().min() >= 1.0
        inputs = {x["asset"] for x in store.manifest(ref)["inputs"]}
        assert inputs == {"candidates", "base_policy"}
        assert store.manifest(ref)["params"]["models"]["base_policy"].startswith("base_policy[all]@")
        # the labelled responses' lengths, stored for quality_labels' analysis
        lengths = pl.read_parquet(ref.file("lengths.parquet"))
        assert lengths["candidate_id"].to_list() == votes["candidate_id"].to_list()
    with duckdb.connect(str(pipeline.home / "warehouse.duckdb"), read_only=True) as con:
        summary = con.sql("select * from lf_summary order by iteration, lf_name").pl()
    assert summary["iteration"].unique().sort().to_list() == [1, 2, 3]
    assert summary.height == 3 * 11
    assert {"llm_prompt", "perplexity", "regex"} <= set(summary["kind"])
    assert summary["coverage"].is_between(0, 1).all()
    # each function's rank correlation with response length, as quality_labels' analysis computed it
    rho = summary["length_correlation"]
    assert rho.drop_nulls().len() > 0 and rho.drop_nulls().is_between(-1, 1).all()
    analysis = pl.concat(
        pl.read_parquet(store.current("quality_labels", i).file("analysis.parquet")) for i in ("1", "2", "3")
    ).sort("iteration", "lf_name")
    assert analysis["length_correlation"].to_list() == rho.to_list()
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("lf_votes"), asset_partitions=["1"]), limit=1
    ).records
    meta = records[0].asset_materialization.metadata
    assert "llm_no_question_back" in meta["lf_summary"].value and "model_scores" in meta
    assert "length_correlation" in meta["lf_summary"].value
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("quality_labels"), asset_partitions=["1"]), limit=1
    ).records
    label_rho = records[0].asset_materialization.metadata["label_length_correlation"].value
    labels = store.read_frame("quality_labels", "1").join(
        store.read_frame("candidates", "1"), on="candidate_id"
    )
    assert label_rho == pytest.approx(
        spearmanr(labels["p_high"], labels["response"].str.len_chars()).statistic
    )
