"""The new marts and checks over the shared whole-pipeline run (three iterations through Dagster)."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from prefscale.cli import main
from prefscale.lineage.audit import audit_chain
from prefscale.lineage.mlflow_runs import find_model_versions, tracking_uri_for
from prefscale.storage import ArtifactStore

pytestmark = pytest.mark.integration


def _query(pipeline, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(pipeline.home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(sql).pl()


def test_every_blocking_check_passed_on_every_partition(pipeline):
    records = pipeline.instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1000
    )
    evaluations = [r.event_log_entry.dagster_event.asset_check_evaluation_data for r in records]
    for asset, name in [
        ("preference_pairs", "chosen_differs_from_rejected"),
        ("preference_pairs", "margins_positive"),
        ("preference_pairs", "pairs_reference_candidates"),
        ("dpo_checkpoint", "checkpoint_loads"),
        ("dpo_checkpoint", "completions_healthy"),
    ]:
        mine = [e for e in evaluations if e.asset_key == dg.AssetKey(asset) and e.check_name == name]
        assert len(mine) >= 3 and all(e.passed for e in mine), (asset, name, [e.passed for e in mine])
        assert all(e.blocking for e in mine)


def test_reward_and_pair_marts_cover_every_iteration(pipeline):
    store = ArtifactStore(pipeline.home)
    rewards = _query(pipeline, "select * from reward_distribution order by iteration")
    assert rewards["iteration"].to_list() == [1, 2, 3]
    assert set(rewards["reward_source"]) == {"label_model"}
    stats = _query(pipeline, "select * from pair_stats order by iteration")
    assert stats["iteration"].to_list() == [1, 2, 3]
    for row in stats.iter_rows(named=True):
        i = str(row["iteration"])
        pairs = store.read_frame("preference_pairs", i)
        scores = store.read_frame("reward_scores", i)
        assert row["pairs"] == pairs.height
        assert row["dropped_prompts"] == store.read_frame("preference_pairs", i, "dropped").height
        assert row["prompts"] == 12  # prompts_per_iteration of the small config
        assert row["mean_margin"] == pytest.approx(pairs["margin"].mean())
        assert row["chosen_longer_share"] == pytest.approx((pairs["length_diff"] > 0).mean())
        r = rewards.filter(pl.col("iteration") == row["iteration"]).row(0, named=True)
        assert r["n"] == scores.height == 12 * 3
        assert r["mean"] == pytest.approx(scores["reward"].mean())


def test_lineage_audit_of_checkpoint_3_agrees_with_prefscale_audit(pipeline):
    store = ArtifactStore(pipeline.home)
    report = audit_chain(store, store.current("dpo_checkpoint", "3"))
    assert report.ok
    expected = {
        f"{n.ref.asset}[{n.ref.partition}]@{n.ref.version}": n.ref.digest
        for n in [*report.nodes, *report.evaluations]
        if not n.repeated
    }
    mart = _query(pipeline, "select * from lineage_audit where checkpoint_iteration = 3")
    assert dict(zip(mart["artifact_key"], mart["stored_sha256"], strict=True)) == expected
    assert mart["sha256_matches"].all()
    # which LF versions and which prompts produced checkpoint 3, and how it scored
    lfs = mart.filter(pl.col("asset") == "lf_votes")
    assert sorted(lfs["partition"]) == ["1", "2", "3"]
    assert all('"lf_name"' in p and '"version"' in p for p in lfs["params"])
    assert sorted(mart.filter(pl.col("asset") == "prompts")["partition"]) == ["1", "2", "3"]
    scored = _query(
        pipeline,
        "select b.win_rate from lineage_audit l join eval_leaderboard b on b.iteration = l.checkpoint_iteration "
        "where l.checkpoint_iteration = 3 and l.relation = 'evaluation' and b.judge = 'sme_rubric'",
    )
    assert scored.height >= 1 and scored["win_rate"].is_between(0, 1).all()


def test_audit_by_registered_model_version(pipeline, capsys):
    store = ArtifactStore(pipeline.home)
    ckpt = store.current("dpo_checkpoint", "3")
    versions = find_model_versions(tracking_uri_for(pipeline.home), "prefscale-embedded", ckpt.digest)
    assert versions
    what = f"models:/prefscale-embedded/{versions[0].version}"
    assert main(["audit", what, "--home", str(pipeline.home)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"audit of dpo_checkpoint[3]@{ckpt.version}")
    assert f"requested as {what}" in out and "run " in out and "all hashes match" in out
