"""`alpaca_eval_results` materialized through Dagster for iterations 1..3, then the warehouse and the CLI.

Runs on the session `pipeline`'s graph (the whole graph on the small config) with every offline judge, in a copy
of its PREFSCALE_HOME and a Dagster instance of its own, so the shared pipeline the other integration tests read
(its warehouse, its MLflow runs) is left exactly as it was.
"""

import dataclasses
import json
import os
import shutil

import dagster as dg
import duckdb
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from prefscale.cli import main
from prefscale.config.recipe import deep_merge
from prefscale.evaluation.alpaca_metrics import load_annotations
from prefscale.lineage.eval_runs import eval_runs
from prefscale.storage import ArtifactStore
from resources import default_resources

pytestmark = pytest.mark.integration

JUDGES = ["rubric", "weak_supervision", "pairrm", "local_llm"]
LABELS = {"sme_rubric", "weak_supervision", "pairrm", "local_llm"}


@pytest.fixture(scope="module")
def judged(pipeline, tmp_path_factory):
    home = tmp_path_factory.mktemp("alpaca_eval_results") / "home"
    shutil.copytree(pipeline.home, home, symlinks=True, ignore=shutil.ignore_patterns("dagster"))
    (home / "dagster").mkdir()
    recipe = pipeline.resources["recipe"]
    overrides = deep_merge(json.loads(recipe.overrides_json or "{}"), {"evaluation": {"judges": JUDGES}})
    saved = os.environ.get("PREFSCALE_HOME")
    try:
        # default_resources points PREFSCALE_HOME (what dbt reads) at the copy: put it back afterwards
        resources = default_resources(
            home=str(home), recipe=recipe.name, overrides_json=json.dumps(overrides)
        )
        with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
            p = dataclasses.replace(pipeline, home=home, instance=instance, resources=resources)
            results = {}
            for i in ("1", "2", "3"):
                results[i] = p.materialize(["alpaca_eval_results"], partition=i)
                assert results[i].success
            assert p.materialize("warehouse").success
            yield p, results
    finally:
        if saved is None:
            os.environ.pop("PREFSCALE_HOME", None)
        else:
            os.environ["PREFSCALE_HOME"] = saved


def test_materialized_with_lineage_and_metadata(judged):
    p, results = judged
    store = ArtifactStore(p.home)
    assert p.instance.get_materialized_partitions(dg.AssetKey("alpaca_eval_results")) == {"1", "2", "3"}
    for i, result in results.items():
        ref = store.current("alpaca_eval_results", i)
        names = {f.name for f in ref.path.iterdir()}
        assert {"metrics.parquet", *(f"annotations_{label}.parquet" for label in LABELS)} <= names
        manifest = store.manifest(ref)
        upstream = {(x["asset"], x["partition"], x["version"]) for x in manifest["inputs"]}
        assert ("eval_results", i, store.current("eval_results", i).version) in upstream
        assert ("eval_baseline", "all", store.current("eval_baseline", "all").version) in upstream
        assert manifest["params"]["judges"] == JUDGES and manifest["params"]["reference"] == "heldout_base"
        (mat,) = result.asset_materializations_for_node("alpaca_eval_results")
        meta = mat.metadata
        assert meta["version"].value == ref.version
        assert "data:image/png;base64," in meta["plot"].value
        # the preview comes first and is short enough for the Dagster UI to show it in place
        assert next(iter(meta)) == "plot_preview" and len(meta["plot_preview"].value) < 1000
        assert "data:image/svg+xml," in meta["plot_preview"].value
        for label in LABELS:
            assert "| variant | iteration |" in meta[f"judge_{label}"].value
        assert meta["mlflow_run_id"].value


def test_annotations_in_alpaca_eval_format(judged, tmp_path):
    p, _ = judged
    store = ArtifactStore(p.home)
    samples = store.read_frame("eval_results", "2", "samples")
    for label in LABELS:
        ann = store.read_frame("alpaca_eval_results", "2", f"annotations_{label}")
        ck = ann.filter(pl.col("variant") == "checkpoint")
        assert ck.height == samples.height
        assert ck["preference"].is_between(1, 2).all() and ck["preference"].null_count() == 0
        assert (ann.filter(pl.col("variant") == "base")["preference"] == 1.5).all()  # the base vs itself
        path = tmp_path / f"{label}.jsonl"
        cols = [
            "instruction",
            "output_1",
            "output_2",
            "generator_1",
            "generator_2",
            "annotator",
            "preference",
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in ck.select(cols).to_dicts()))
        assert load_annotations(path)["generator_2"].iloc[0].startswith("dpo_checkpoint[2]@")
        assert main(["alpacaeval", "--annotations", str(path), "--json"]) == 0


def test_rubric_rows_match_eval_results(judged):
    p, _ = judged
    store = ArtifactStore(p.home)
    for i in ("1", "2", "3"):
        metrics = store.read_frame("alpaca_eval_results", i, "metrics")
        assert set(metrics["judge"]) == LABELS
        rub = metrics.filter((pl.col("judge") == "sme_rubric") & (pl.col("variant") == "checkpoint")).row(
            0, named=True
        )
        res = store.read_frame("eval_results", i, "results").row(0, named=True)
        assert rub["win_rate"] == pytest.approx(res["win_rate"], abs=1e-12)
        assert (rub["n_wins"], rub["n_wins_base"], rub["n_draws"]) == (
            res["n_wins"],
            res["n_losses"],
            res["n_draws"],
        )
        assert rub["model"] == res["model"]
        assert metrics["win_rate"].is_between(0, 1).all()  # 0-1, not alpaca_eval's 0-100


def test_warehouse_leaderboard_per_iteration_and_judge(judged, capsys):
    p, _ = judged
    with duckdb.connect(str(p.home / "warehouse.duckdb"), read_only=True) as con:
        board = con.sql("select * from eval_leaderboard order by iteration, judge").pl()
    assert sorted(set(board["iteration"])) == [0, 1, 2, 3]
    per_iter = board.group_by("iteration").agg(
        pl.col("judge").n_unique().alias("judges"), pl.len().alias("rows")
    )
    assert (per_iter["judges"] >= 2).all() and (per_iter["judges"] == per_iter["rows"]).all()
    assert set(board["judge"]) == LABELS
    assert board["lc_win_rate"].null_count() == 0 and board["lc_win_rate"].is_between(0, 1).all()
    assert board["standard_error"].null_count() == 0
    base = board.filter(pl.col("iteration") == 0)
    assert (base["win_rate"] == 0.5).all() and (base["lc_win_rate"] == 0.5).all()
    rubric = board.filter(pl.col("judge") == "sme_rubric")
    assert rubric["mean_adherence"].null_count() == 0  # adherence stays on the rubric rows
    assert board.filter(pl.col("judge") != "sme_rubric")["mean_adherence"].null_count() == 12
    # `prefscale leaderboard`: one row per (iteration, judge), sorted, with the LC win rate
    assert main(["leaderboard", "--home", str(p.home)]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, line in enumerate(out) if line.startswith("eval_leaderboard"))
    header = out[i + 1].split()
    assert header[:2] == ["iteration", "judge"] and "lc_win_rate" in header
    rows = [line.split()[:2] for line in out[i + 3 : i + 3 + board.height]]
    assert rows == [[str(it), j] for it, j in board.select("iteration", "judge").rows()]
    assert any(line.startswith("eval_adherence") for line in out)


def test_mlflow_runs_with_the_plot(judged):
    p, _ = judged
    uri = f"sqlite:///{p.home / 'mlflow.db'}"
    runs = {r.info.run_name: r for r in eval_runs(uri, "prefscale")}
    assert {"alpaca_eval-1", "alpaca_eval-2", "alpaca_eval-3"} <= set(runs)
    run = runs["alpaca_eval-3"]
    assert run.data.tags["dagster.partition"] == "3"
    assert 0 <= run.data.metrics["checkpoint.sme_rubric.win_rate"] <= 1
    files = {f.path for f in MlflowClient(tracking_uri=uri).list_artifacts(run.info.run_id)}
    assert {"alpaca_eval_results.png", "metrics.json"} <= files
