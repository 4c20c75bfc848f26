"""Candidates through each backend and best-of-N through real Dagster on the tiny model (one iteration).

One fresh PREFSCALE_HOME: bootstrap, iteration 1 (with best_of_n and alpaca_eval_results), the warehouse. The endpoint tests sample
iteration 2's candidates from a local OpenAI-compatible server, then from one that fails: the failed
materialization publishes nothing and leaves the earlier version current.
"""

import json
import os

import dagster as dg
import duckdb
import polars as pl
import pytest

from prefscale.config.recipe import deep_merge
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.storage import ArtifactStore
from resources import RecipeResource
from tests.fake_openai_server import FakeServer
from tests.integration.conftest import BOOTSTRAP_ASSETS, ITERATION_ASSETS, SMALL, Pipeline, small_resources

pytestmark = pytest.mark.integration

N = 4  # the embedded recipe's evaluation.best_of_n
SLOTS = SMALL["evaluation"]["samples_per_prompt"]


@pytest.fixture(scope="module")
def one_iteration(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefscale_gen_home")
    saved = os.environ.get("PREFSCALE_HOME")
    resources = small_resources(home)
    import definitions

    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        p = Pipeline(home=home, instance=instance, assets=list(definitions.defs.assets), resources=resources)
        assert p.materialize(BOOTSTRAP_ASSETS).success
        assert p.materialize([*ITERATION_ASSETS, "best_of_n", "alpaca_eval_results"], partition="1").success
        assert p.materialize("warehouse").success
        yield p
    if saved is None:
        os.environ.pop("PREFSCALE_HOME", None)
    else:
        os.environ["PREFSCALE_HOME"] = saved


def _metadata(p: Pipeline, key: str, partition: str) -> dict:
    event = p.instance.get_latest_materialization_event(dg.AssetKey(key), partition)  # type: ignore[call-arg]
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _latest(p: Pipeline, key: str) -> dict:
    records = p.instance.fetch_materializations(dg.AssetKey(key), limit=1).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_candidates_report_backend_tokens_and_latency(one_iteration):
    p = one_iteration
    store = ArtifactStore(p.home)
    cands = store.read_frame("candidates", "1")
    assert cands.schema == pl.Schema({k: v for k, v in CANDIDATE_SCHEMA.items() if k != "latency_s"})
    assert set(cands["finish_reason"]) <= {"stop", "length"}
    # per-response latency: beside the version (a measurement, not content), one row per candidate
    latency = store.read_measurements(store.current("candidates", "1"))
    assert latency["candidate_id"].sort().equals(cands["candidate_id"].sort())
    assert (latency["latency_s"] > 0).all()
    meta = _latest(p, "candidates")
    assert meta["backend"] == "transformers" and meta["oom_backoffs"] == 0
    assert meta["tokens_per_second"] > 0
    assert 0 < meta["latency_p50_s"] <= meta["latency_p90_s"] <= meta["latency_p99_s"]


def test_best_of_n_pool_contains_the_plain_samples_and_keeps_the_best(one_iteration):
    store = ArtifactStore(one_iteration.home)
    ref = store.current("best_of_n", "1")
    pool = pl.read_parquet(ref.file("pool.parquet"))
    kept = pl.read_parquet(ref.file("samples.parquet"))
    plain = store.read_frame("eval_results", "1", "samples")
    held = store.read_frame("eval_prompts", "all")
    assert pool.height == held.height * SLOTS * N
    # same seeds: pool sample k < S is the plain evaluation's sample k, token for token
    first = (
        pool.filter(pl.col("sample_idx") < SLOTS)
        .select("prompt_id", "sample_idx", "response")
        .sort("prompt_id", "sample_idx")
    )
    assert first.equals(plain.select("prompt_id", "sample_idx", "response").sort("prompt_id", "sample_idx"))
    # one kept sample per (prompt, slot), the best of its slot's N
    assert (
        kept.select("prompt_id", "sample_idx")
        .sort("prompt_id", "sample_idx")
        .equals(plain.select("prompt_id", "sample_idx").sort("prompt_id", "sample_idx"))
    )
    best = pool.group_by("prompt_id", "slot").agg(pl.col("reward").max().alias("max_reward"))
    joined = kept.join(best, left_on=["prompt_id", "sample_idx"], right_on=["prompt_id", "slot"])
    assert (joined["reward"] == joined["max_reward"]).all()
    assert (kept["chosen_sample"] % SLOTS == kept["sample_idx"]).all()
    manifest = store.manifest(ref)
    assert {i["asset"] for i in manifest["inputs"]} == {"dpo_checkpoint", "eval_baseline", "eval_prompts"}
    assert manifest["params"]["best_of_n"] == N and manifest["params"]["source"] == "label_model"
    meta = _latest(one_iteration, "best_of_n")
    assert meta["generator"] == "dpo-iter1+bo4" and "win_rate_plain" in meta
    assert meta["mean_reward_kept"] >= 0


def test_leaderboard_shows_best_of_n_beside_the_checkpoint(one_iteration, capsys):
    from prefscale.cli import main

    with duckdb.connect(str(one_iteration.home / "warehouse.duckdb"), read_only=True) as con:
        board = con.sql(
            "select iteration, variant, generator, judge, win_rate from eval_leaderboard "
            "where judge = 'sme_rubric' order by iteration, generator"
        ).pl()
        adh = con.sql("select distinct generator from eval_adherence order by generator").pl()
    assert board.select("iteration", "variant", "generator").rows() == [
        (0, "base", "base"),
        (1, "checkpoint", "dpo-iter1"),
        (1, "best_of_n", "dpo-iter1+bo4"),
    ]
    with duckdb.connect(str(one_iteration.home / "warehouse.duckdb"), read_only=True) as con:
        ws = con.sql(
            "select iteration, variant, generator from eval_leaderboard where judge = 'weak_supervision' "
            "order by iteration, generator"
        ).pl()
    # alpaca_eval_results judged the best-of-N samples too: their rows carry the same generator
    assert ws.rows() == [
        (0, "base", "base"),
        (1, "checkpoint", "dpo-iter1"),
        (1, "best_of_n", "dpo-iter1+bo4"),
    ]
    store = ArtifactStore(one_iteration.home)
    bon = store.read_frame("best_of_n", "1", "results")
    assert board["win_rate"][2] == pytest.approx(bon["win_rate"][0])
    assert adh["generator"].to_list() == ["base", "dpo-iter1", "dpo-iter1+bo4"]
    assert main(["leaderboard", "--home", str(one_iteration.home)]) == 0
    out = capsys.readouterr().out
    assert "dpo-iter1+bo4" in out and "dpo-iter1 " in out


def _endpoint_resources(p: Pipeline, url: str, **endpoint) -> dict:
    overrides = deep_merge(
        SMALL,
        {
            "generation": {
                "backend": "endpoint",
                "endpoint": {
                    "base_url": url,
                    "model": "policy-{policy_iteration}",
                    "max_concurrency": 4,
                    "timeout_s": 2.0,
                    "max_retries": 1,
                    "backoff_s": 0.01,
                    **endpoint,
                },
            }
        },
    )
    return {
        **p.resources,
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(overrides)),
    }


def _materialize(p: Pipeline, resources: dict, partition: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        p.assets,
        selection=dg.AssetSelection.assets("candidates"),
        partition_key=partition,
        resources=resources,
        instance=p.instance,
        raise_on_error=False,
    )


def test_candidates_from_an_endpoint_then_a_failing_one_publishes_nothing(one_iteration):
    p = one_iteration
    store = ArtifactStore(p.home)
    assert p.materialize(["prompts"], partition="2").success
    ok = FakeServer("ok")
    try:
        result = _materialize(p, _endpoint_resources(p, ok.url), "2")
        assert result.success
    finally:
        ok.close()
    cands = store.read_frame("candidates", "2")
    prompts = store.read_frame("prompts", "2")
    n = SMALL["generation"]["num_candidates"]
    assert cands.height == prompts.height * n and cands["response"].str.starts_with("echo ").all()
    assert {r["model"] for r in ok.requests} == {"policy-1"}  # iteration 2 samples dpo_checkpoint[1]
    meta = _latest(p, "candidates")
    assert meta["backend"] == "endpoint" and meta["requests"] == cands.height
    versions, current = store.versions("candidates", "2"), store.current("candidates", "2").version

    bad = FakeServer("500")
    try:
        failed = _materialize(p, _endpoint_resources(p, bad.url), "2")
    finally:
        bad.close()
    assert not failed.success
    errors = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    text = errors[0].step_failure_data.error.to_string()
    assert f"{bad.url}/chat/completions" in text and "HTTP 500" in text
    assert store.versions("candidates", "2") == versions
    assert store.current("candidates", "2").version == current
    assert not [
        d for d in (p.home / "artifacts" / "candidates" / "2").iterdir() if d.name.startswith(".tmp-")
    ]
