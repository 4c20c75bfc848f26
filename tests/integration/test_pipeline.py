"""The whole alignment loop materialized through Dagster on a small config."""

import json

import dagster as dg
import duckdb
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from prefscale.artifacts import ITERATION_ASSETS
from prefscale.evaluation.rubric import PREFERENCES
from prefscale.storage import ArtifactStore

pytestmark = pytest.mark.integration


def test_every_asset_and_partition_materialized(pipeline):
    inst = pipeline.instance
    for key in ("base_policy", "eval_prompts", "eval_baseline", "eval_leaderboard", "eval_adherence"):
        assert inst.get_latest_materialization_event(dg.AssetKey(key)) is not None, key
    for key in ITERATION_ASSETS:
        parts = inst.get_materialized_partitions(dg.AssetKey(key))
        assert parts == {"1", "2", "3"}, (key, parts)


def test_warehouse_leaderboard_and_adherence(pipeline):
    with duckdb.connect(str(pipeline.home / "warehouse.duckdb"), read_only=True) as con:
        board = con.sql("select * from eval_leaderboard order by iteration").pl()
        adh = con.sql("select * from eval_adherence").pl()
    assert board["iteration"].to_list() == [0, 1, 2, 3]
    for col in ("iteration", "model", "judge", "win_rate", "n_total", "avg_length"):
        assert col in board.columns
    assert board["win_rate"][0] == 0.5  # the base against itself
    assert board["win_rate"].is_between(0, 1).all()
    assert (board["n_total"] == 6 * 2).all()  # held-out prompts x samples per prompt
    assert adh.height == 4 * len(PREFERENCES)
    assert set(adh["preference"]) == set(PREFERENCES)
    assert adh["rate"].is_between(0, 1).all()


def test_iterations_chain_through_checkpoints(pipeline):
    store = ArtifactStore(pipeline.home)
    base = store.current("base_policy", "all")
    for i in (1, 2, 3):
        ckpt = store.current("dpo_checkpoint", str(i))
        info = json.loads((ckpt.path / "prefscale_checkpoint.json").read_text())
        expected = (
            f"base_policy[all]@{base.version}"
            if i == 1
            else f"dpo_checkpoint[{i - 1}]@{store.current('dpo_checkpoint', str(i - 1)).version}"
        )
        assert info["started_from"] == expected
        assert (ckpt.path / "model.safetensors").is_file()
    # candidates of iteration i were sampled from the policy iteration i started from
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("candidates"), asset_partitions=["2"]), limit=1
    ).records
    policy = records[0].asset_materialization.metadata["policy"].value
    assert policy.startswith("dpo_checkpoint[1]@")


def test_prompt_shards_are_disjoint_and_pairs_in_trl_format(pipeline):
    store = ArtifactStore(pipeline.home)
    shards = [set(store.read_frame("prompts", str(i))["prompt_id"]) for i in (1, 2, 3)]
    held = set(store.read_frame("eval_prompts", "all")["prompt_id"])
    for a in range(3):
        assert not shards[a] & held
        for b in range(a + 1, 3):
            assert not shards[a] & shards[b]
    pairs = store.read_frame("preference_pairs", "1")
    assert pairs.height > 0
    row = pairs.row(0, named=True)
    assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
    assert (pairs["chosen_id"] != pairs["rejected_id"]).all()
    cands = store.read_frame("candidates", "1")
    assert cands.height == 12 * 3
    assert set(pairs["chosen_id"]) <= set(cands["candidate_id"])


def test_mlflow_run_per_checkpoint(pipeline):
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prefscale")
    runs = client.search_runs([exp.experiment_id])
    by_partition = {r.data.tags["dagster.partition"]: r for r in runs}
    assert set(by_partition) == {"1", "2", "3"}
    store = ArtifactStore(pipeline.home)
    for i, run in by_partition.items():
        digest = store.current("preference_pairs", i).digest
        assert len(digest) == 64 and run.data.tags["pairs.sha256"] == digest
        assert run.data.tags["dagster.run_id"]
        assert float(run.data.params["dpo.beta"]) > 0
        assert "final_loss" in run.data.metrics
        assert client.get_metric_history(run.info.run_id, "loss")


def test_single_partition_rematerializes_idempotently(pipeline):
    store = ArtifactStore(pipeline.home)
    before = store.current("lf_votes", "2").version
    versions_before = store.versions("candidates", "2")
    assert pipeline.materialize(["lf_votes"], partition="2").success
    assert store.current("lf_votes", "2").version == before
    assert store.versions("candidates", "2") == versions_before
    # re-running the warehouse does not duplicate rows
    assert pipeline.materialize("warehouse").success
    with duckdb.connect(str(pipeline.home / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from eval_leaderboard").fetchone()[0] == 4


def test_evaluation_samples_cover_heldout(pipeline):
    store = ArtifactStore(pipeline.home)
    samples = store.read_frame("eval_results", "3", "samples")
    held = store.read_frame("eval_prompts", "all")
    assert set(samples["prompt_id"]) == set(held["prompt_id"])
    assert samples.group_by("prompt_id").len()["len"].to_list() == [2] * held.height
    assert isinstance(samples, pl.DataFrame)


def test_warehouse_reads_the_runs_own_home_whatever_the_environment_says(pipeline, tmp_path, monkeypatch):
    # another home in the environment (an earlier test's, a shell's): dbt still builds from the run's storage
    monkeypatch.setenv("PREFSCALE_HOME", str(tmp_path / "elsewhere"))
    assert pipeline.materialize("warehouse").success
    with duckdb.connect(str(pipeline.home / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from eval_leaderboard").fetchall()[0][0] > 0
    assert not (tmp_path / "elsewhere" / "warehouse.duckdb").exists()
