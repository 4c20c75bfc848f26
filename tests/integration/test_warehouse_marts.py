"""The marts reward_distribution, pair_stats and lineage_audit, built by dbt through Dagster over a small store.

The store (small_home.py) is made by the real core functions; the expected numbers are computed here from the
same frames with polars, and lineage_audit is compared with `prefscale audit` (prefscale.audit.audit_chain).
"""

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_dbt import DbtCliResource
from scipy.stats import spearmanr

from assets.dbt import warehouse_models
from prefscale.cli import main
from prefscale.lineage.audit import audit_chain
from prefscale.storage import ArtifactStore
from resources import DBT_PROJECT_DIR, StorageResource, dbt_executable
from tests.integration.small_home import LFS, build_small_home, tiny_policy

pytestmark = pytest.mark.integration

MARTS = ["reward_distribution", "pair_stats", "lineage_audit"]


def build_marts(home: Path, monkeypatch: pytest.MonkeyPatch) -> dg.ExecuteInProcessResult:
    """The three marts and everything of the warehouse they read, as `make run`'s warehouse step builds them."""
    monkeypatch.setenv("PREFSCALE_HOME", str(home))
    selection = dg.AssetSelection.assets(*MARTS).upstream() & dg.AssetSelection.groups("warehouse")
    dbt = DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=dbt_executable()
    )
    return dg.materialize(
        [warehouse_models],
        selection=selection,
        resources={"dbt": dbt, "storage": StorageResource(home=str(home))},
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def query(home: Path, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.sql(sql).pl()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "base")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, policy_dir: Path):
    small = build_small_home(tmp_path_factory.mktemp("warehouse") / "home", policy_dir)
    with pytest.MonkeyPatch.context() as mp:
        result = build_marts(small.home, mp)
    assert result.success
    return small, result


def test_every_dbt_test_of_the_marts_ran_and_passed(built):
    _, result = built
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    by_name = {c.check_name: c.passed for c in checks}
    for name in (
        "unique_reward_distribution_distribution_key",
        "accepted_values_reward_distribution_reward_source__label_model__reward_model__pairrm__ensemble",
        "relationships_pair_stats_iteration__iteration__ref_reward_distribution_",
        "unique_lineage_audit_lineage_key",
        "lineage_audit_hashes_match",
        "relationships_stg_preference_pairs_chosen_key__candidate_key__ref_stg_candidates_",
    ):
        assert by_name.get(name) is True, (name, sorted(by_name))
    assert all(by_name.values())
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert set(MARTS) <= materialized


def test_reward_distribution_per_iteration_and_source(built):
    small, _ = built
    board = query(small.home, "select * from reward_distribution order by iteration, reward_source")
    assert [(r["iteration"], r["reward_source"]) for r in board.iter_rows(named=True)] == [
        (1, "label_model"),
        (2, "ensemble"),
        (2, "label_model"),
        (2, "pairrm"),
    ]
    for row in board.iter_rows(named=True):
        rewards = small.rewards[row["iteration"]]
        col = "reward" if row["reward_source"] == "ensemble" else f"score_{row['reward_source']}"
        scores = rewards[col]
        assert row["n"] == rewards.height == 12 and row["n_non_finite"] == 0
        assert row["mean"] == pytest.approx(scores.mean(), abs=1e-9)
        assert row["std"] == pytest.approx(scores.std(), abs=1e-9)
        assert row["median"] == pytest.approx(scores.median(), abs=1e-9)
        assert row["p90"] == pytest.approx(scores.quantile(0.9, "linear"), abs=1e-9)
        assert (row["min"], row["max"]) == pytest.approx((scores.min(), scores.max()))
        # one prompt in four has every candidate tied (small_home: prompt 1), and no other ties
        assert row["prompts"] == 4
        assert row["all_tied_prompt_share"] == 0.25 and row["any_tie_prompt_share"] == 0.25
        # Spearman (average ranks) of score with response length; small_home ties both (prompts 0 and 1)
        joined = rewards.join(small.store.read_frame("candidates", str(row["iteration"])), on="candidate_id")
        expected = spearmanr(joined[col], joined["response"].str.len_chars()).statistic
        assert row["length_correlation"] == pytest.approx(expected, abs=1e-9)
    # iteration 1 also has an older reward_scores version (scores about 5 higher): only `current` is read
    assert board["mean"][0] < 1


def test_pair_stats_per_iteration(built):
    small, _ = built
    stats = query(small.home, "select * from pair_stats order by iteration")
    assert stats["iteration"].to_list() == [1, 2]
    for row in stats.iter_rows(named=True):
        pairs, dropped = small.pairs[row["iteration"]], small.dropped[row["iteration"]]
        assert row["strategy"] == "best_vs_worst" and row["min_margin"] == 1e-6
        assert row["pairs"] == pairs.height == 2
        assert row["candidates"] == 12 and row["prompts"] == 4 and row["pair_rate"] == 0.5
        assert row["dropped_prompts"] == dropped.height == 2
        assert row["dropped_identical_candidates"] == 1 and row["dropped_tied_rewards"] == 1
        assert row["dropped_below_min_margin"] == 0
        assert row["mean_margin"] == pytest.approx(pairs["margin"].mean())
        assert row["median_margin"] == pytest.approx(pairs["margin"].median())
        assert row["mean_length_diff"] == pytest.approx(pairs["length_diff"].mean())
        assert row["chosen_longer_share"] == pytest.approx((pairs["length_diff"] > 0).mean())
        chosen_chars = pairs["chosen"].list.first().struct.field("content").str.len_chars().mean()
        assert row["mean_chosen_chars"] == pytest.approx(chosen_chars)
        assert row["pairs_version"] == small.refs[("preference_pairs", str(row["iteration"]))].version


def _audit_rows(store: ArtifactStore, iteration: int) -> dict[str, str | None]:
    """artifact_key -> digest recorded for it, for every version `prefscale audit <iteration>` lists."""
    report = audit_chain(store, store.current("dpo_checkpoint", str(iteration)))
    assert report.ok, report.problems
    rows = {}
    for n in [*report.nodes, *report.evaluations]:
        if not n.repeated:
            rows[f"{n.ref.asset}[{n.ref.partition}]@{n.ref.version}"] = n.ref.digest
    return rows


def test_lineage_audit_agrees_with_prefscale_audit(built, capsys):
    small, _ = built
    lineage = query(small.home, "select * from lineage_audit")
    for i in (1, 2):
        expected = _audit_rows(small.store, i)
        mart = lineage.filter(pl.col("checkpoint_iteration") == i)
        assert set(mart["artifact_key"]) == set(expected)
        assert mart.height == len(expected)
        for row in mart.iter_rows(named=True):
            assert row["stored_sha256"] == expected[row["artifact_key"]]
            assert row["sha256_matches"] and row["manifest_present"]
            if row["relation"] == "upstream":
                assert row["recorded_sha256"] == row["stored_sha256"]
        # and what the CLI prints names the same versions
        assert main(["audit", str(i), "--home", str(small.home)]) == 0
        out = capsys.readouterr().out
        for key in mart["artifact_key"]:
            assert key in out
    relations = (
        lineage.filter(pl.col("checkpoint_iteration") == 2).group_by("relation").len().sort("relation")
    )
    assert dict(relations.iter_rows()) == {"checkpoint": 1, "evaluation": 1, "upstream": 14}


def test_lineage_answers_which_lfs_and_prompts_made_a_checkpoint_and_its_score(built):
    small, _ = built
    lfs = query(
        small.home,
        "select partition, params from lineage_audit where checkpoint_iteration = 2 and asset = 'lf_votes'",
    )
    assert sorted(lfs["partition"]) == [
        "1",
        "2",
    ]  # the checkpoint it started from was trained on iteration 1's
    for params in lfs["params"]:
        assert [(f["lf_name"], f["version"]) for f in json.loads(params)["functions"]] == LFS
    prompts = query(
        small.home,
        "select version from lineage_audit where checkpoint_iteration = 2 and asset = 'prompts' order by 1",
    )
    assert set(prompts["version"]) == {small.refs[("prompts", p)].version for p in ("1", "2")}
    evaluation = query(
        small.home,
        "select artifact_key from lineage_audit where checkpoint_iteration = 2 and relation = 'evaluation'",
    )
    assert evaluation["artifact_key"].to_list() == [
        f"eval_results[2]@{small.refs[('eval_results', '2')].version}"
    ]


def test_before_any_iteration_the_marts_build_empty(tmp_path, policy_dir, monkeypatch):
    home = tmp_path / "home"
    store = ArtifactStore(home)
    store.publish_dir("base_policy", "all", lambda d: shutil.copytree(policy_dir, d, dirs_exist_ok=True))
    result = build_marts(home, monkeypatch)
    assert result.success
    for mart in MARTS:
        assert query(home, f"select count(*) as n from {mart}")["n"][0] == 0, mart
    assert query(home, "select count(*) as n from stg_artifact_manifests")["n"][0] == 1


def test_a_tampered_digest_fails_the_build_and_the_audit(built, tmp_path, monkeypatch, capsys):
    small, _ = built
    home = tmp_path / "copy"
    shutil.copytree(small.home, home, symlinks=True)
    (home / "warehouse.duckdb").unlink()
    cands = ArtifactStore(home).current("candidates", "1")
    sidecar = cands.path.parent / f"{cands.version}.sha256"
    sidecar.write_text("0" * 64 + "\n")
    result = build_marts(home, monkeypatch)
    assert not result.success
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    }
    assert checks["lineage_audit_hashes_match"] is False
    bad = query(home, "select checkpoint_iteration, artifact_key from lineage_audit where not sha256_matches")
    assert set(bad["artifact_key"]) == {f"candidates[1]@{cands.version}"}
    assert sorted(bad["checkpoint_iteration"]) == [1, 2]  # checkpoint 2 descends from checkpoint 1
    assert main(["audit", "2", "--home", str(home)]) == 1
    assert f"{cands.path}: recorded sha256" in capsys.readouterr().out
