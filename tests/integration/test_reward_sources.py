"""Each reward source through a real Dagster materialization: bootstrap + one iteration, a fresh home each.

The embedded recipe with one changed line (`reward.source`), on a configuration smaller than the shared
pipeline's: the label-model probability, the trained weak-supervision reward model, and the tiny PairRM (random:
a code-path check). The reward model is materialized as its own asset first, and `reward_scores` must reuse it.

Every source runs the iteration up to its pairs and its curated SFT subset. DPO and the evaluation do not depend
on the source (they read the pairs), run DPO in a subprocess (seconds of imports each), and are covered for the
label model by the whole-graph pipeline test: here they run once, on the reward model's pairs.
"""

import json
import os
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from prefscale.artifacts import ITERATION_ASSETS
from prefscale.config.recipe import deep_merge
from prefscale.storage import ArtifactStore
from tests.integration.conftest import SMALL

pytestmark = pytest.mark.integration

TINY = deep_merge(
    SMALL,
    {
        "policy": {"embedded": {"train_steps": 40, "corpus_prompts": 60}},
        "data": {"pool_size": 40, "prompts_per_iteration": 8, "heldout_size": 3},
        "generation": {"max_new_tokens": 40},
        "reward": {"reward_model": {"epochs": 1, "batch_size": 8, "max_length": 96}},
    },
)
# the iteration's assets (prefscale.artifacts) cut at the rewards and at the training, curated_sft with the pairs
_REWARDS, _TRAINING = ITERATION_ASSETS.index("reward_scores"), ITERATION_ASSETS.index("dpo_checkpoint")
BEFORE_REWARDS = list(ITERATION_ASSETS[:_REWARDS])
AFTER_REWARDS = [*ITERATION_ASSETS[_REWARDS:_TRAINING], "curated_sft"]
TRAINING = list(ITERATION_ASSETS[_TRAINING:])
SOURCES = {
    "label_model": {"source": "label_model"},
    "reward_model": {"source": "reward_model"},
    "pairrm": {"source": "pairrm"},  # embedded policy: the tiny ranker by default
}


def _run(home: Path, source: str) -> tuple[dict, ArtifactStore]:
    from resources import default_resources

    overrides = deep_merge(TINY, {"reward": SOURCES[source]})
    resources = default_resources(home=str(home), recipe="embedded", overrides_json=json.dumps(overrides))
    import definitions

    assets = list(definitions.defs.assets)
    (home / "dagster").mkdir(parents=True)
    meta = {}
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:

        def materialize(keys: list[str], partition: str | None = None) -> dg.ExecuteInProcessResult:
            result = dg.materialize(
                assets,
                selection=dg.AssetSelection.assets(*keys),
                partition_key=partition,
                resources=resources,
                instance=instance,
            )
            assert result.success, keys
            for key in keys:
                for m in result.asset_materializations_for_node(key):
                    meta[key] = m.metadata
            return result

        materialize(["base_policy", "eval_prompts", "eval_baseline"])
        materialize(BEFORE_REWARDS, "1")
        if source == "reward_model":
            materialize(["reward_model"])
        materialize(AFTER_REWARDS, "1")
        if source == "reward_model":
            materialize(TRAINING, "1")
    return meta, ArtifactStore(home)


@pytest.fixture
def restore_home(monkeypatch):
    # One torch thread: these models are tiny, and several threads spin against each other on 2 shared cores.
    monkeypatch.setenv("PREFSCALE_TORCH_THREADS", "1")
    saved = os.environ.get("PREFSCALE_HOME")
    yield
    if saved is None:
        os.environ.pop("PREFSCALE_HOME", None)
    else:
        os.environ["PREFSCALE_HOME"] = saved


@pytest.mark.parametrize("source", list(SOURCES))
def test_reward_source_runs_one_iteration(source, tmp_path, restore_home):
    meta, store = _run(tmp_path / "home", source)
    rewards = store.read_frame("reward_scores", "1")
    cands = store.read_frame("candidates", "1")
    assert rewards.height == cands.height == 8 * 3
    assert set(rewards["source"]) == {source}
    assert rewards["reward"].is_finite().all()
    assert (rewards[f"score_{source}"] == rewards["reward"]).all()  # one source: the raw score
    assert meta["reward_scores"]["source"].value == ("pairrm[tiny]" if source == "pairrm" else source)
    assert "data:image/png;base64," in meta["reward_scores"]["distribution"].value
    preview = meta["reward_scores"]["distribution_preview"].value  # shown in place by the Dagster UI
    assert preview.startswith("![final reward distribution](data:image/svg+xml,") and len(preview) < 1000
    manifest = store.manifest(store.current("reward_scores", "1"))
    used = {i["asset"] for i in manifest["inputs"]}
    if source == "reward_model":
        rm = store.current("reward_model", "all")
        assert used == {"candidates", "quality_labels", "reward_model"}
        assert manifest["inputs"][-1]["version"] == rm.version
        assert meta["reward_scores"]["reward_model_trained_now"].value is False  # the asset's version, reused
        assert meta["reward_model"]["trained"].value is True
        assert (rm.path / "model.safetensors").is_file()
        assert rewards["reward"].is_between(0, 1).all()
    else:
        assert used == {"candidates", "quality_labels"}
    if source == "pairrm":
        # the full 3×3 matrix per prompt, one row per candidate, zero diagonal
        for (_pid,), g in rewards.group_by("prompt_id"):
            assert sorted(g["matrix_index"].to_list()) == [0, 1, 2]
            for k, row in zip(g["matrix_index"], g["pairrm_logits"], strict=True):
                assert len(row) == 3 and row[k] == 0.0
        assert "M[i, j]" in meta["reward_scores"]["pairrm_matrix"].value
        assert manifest["params"]["sources"][0]["model"] == "tiny"
    # pairs from the new frame, with the completed metadata
    pairs = store.read_frame("preference_pairs", "1")
    pm = meta["preference_pairs"]
    assert pm["dagster/row_count"].value == pairs.height > 0
    assert pm["prompts"].value == 8
    assert pm["dropped_prompts"].value == 8 - pairs.height
    assert pm["reward_source"].value == source
    assert "median" in pm["margin_and_length"].value
    # the curated SFT subset: chat messages, the best of the finished distinct candidates
    sft = store.read_frame("curated_sft", "1")
    assert 0 < sft.height <= 6
    first = sft["messages"][0].to_list()
    assert [m["role"] for m in first] == ["user", "assistant"]
    eligible = cands.filter(pl.col("finish_reason") == "stop", pl.col("response") != "").join(
        rewards.select("candidate_id", "reward"), on="candidate_id"
    )
    kept = eligible.join(sft.select("candidate_id"), on="candidate_id")
    left = eligible.join(kept.select("prompt", "response"), on=["prompt", "response"], how="anti")
    assert kept.height == sft.height
    assert left.height == 0 or kept["reward"].min() >= left["reward"].max()
    if source == "reward_model":  # the iteration finished: a checkpoint trained on these pairs, evaluated
        ckpt = store.manifest(store.current("dpo_checkpoint", "1"))
        assert store.current("preference_pairs", "1").version in {i["version"] for i in ckpt["inputs"]}
        results = store.read_frame("eval_results", "1", "results")
        assert results["win_rate"].is_between(0, 1).all()
