"""`base_policy` and the prompt shards for the non-toy recipes, through Dagster.

smollm2: the real GGUF converted by the asset (shared with the unit tests: `tests/conftest.py`), published
atomically and reused when the same file is materialized again. snorkel-mistral-pairrm: the recipe as shipped,
with its hub ids swapped for tiny local stand-ins (a model folder, a dataset folder of the same layout), so the
loading code is the code that runs on the cluster.
"""

import json

import dagster as dg
import polars as pl
import pytest

from assets.policy import base_policy
from assets.prompts import eval_prompts, prompts
from prefscale.compute import resolve_compute
from prefscale.config.policy import EmbeddedModel
from prefscale.data import domain
from prefscale.policy.io import load_policy
from prefscale.policy.tiny import pretrain_tiny_llama
from prefscale.storage import ArtifactStore, digest_folder
from resources import ComputeResource, RecipeResource, StorageResource

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_smollm2_base_policy_is_converted_once(smollm2_policy, monkeypatch):
    result = smollm2_policy.result
    assert result.success
    meta = result.asset_materializations_for_node("base_policy")[0].metadata
    store = ArtifactStore(smollm2_policy.home)
    ref = store.current("base_policy", "all")
    assert meta["source"].value == "gguf"
    assert meta["reused"].value is False
    assert meta["parameters"].value > 130e6
    assert meta["sha256"].value == ref.digest == digest_folder(ref.path)
    assert not [p for p in ref.path.parent.iterdir() if p.name.startswith(".tmp-")]  # no partial folder
    manifest = json.loads((ref.path / "_manifest.json").read_text())
    assert manifest["params"]["gguf_sha256"] == meta["gguf_sha256"].value

    # Materialized again from the same file: the published version is reused, not converted again.
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)
    again = dg.materialize(
        [base_policy],
        resources={
            "storage": StorageResource(home=str(smollm2_policy.home)),
            "recipe": RecipeResource(name="smollm2"),
            "compute": ComputeResource(device="cpu"),
        },
    )
    meta2 = again.asset_materializations_for_node("base_policy")[0].metadata
    assert meta2["reused"].value is True
    assert store.current("base_policy", "all").version == ref.version
    assert store.versions("base_policy", "all") == [ref.version]


def _tiny_model(path):
    corpus = domain.make_corpus(domain.make_prompt_pool(20, 1), 1, 2)
    cfg = EmbeddedModel(
        vocab_size=350,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        train_steps=2,
        batch_size=8,
    )
    pretrain_tiny_llama(corpus, cfg, path, resolve_compute("cpu"), seed=0)


def test_snorkel_recipe_loads_policy_and_prompt_shards_with_local_stand_ins(tmp_path, monkeypatch):
    from tests.conftest import REPO

    monkeypatch.chdir(REPO)  # the recipe's accelerate config path is relative to the repository root
    model = tmp_path / "Mistral-7B-Instruct-v0.2"  # a local folder where the hub id was
    _tiny_model(model)
    ds = tmp_path / "ultrafeedback_binarized" / "data"
    ds.mkdir(parents=True)
    rows = [{"prompt": f"Prompt number {i}: explain topic {i}.", "prompt_id": str(i)} for i in range(40)]
    pl.DataFrame(rows).write_parquet(ds / "train_prefs-00000-of-00001.parquet")
    overrides = {
        "policy": {"model": str(model)},
        "data": {"dataset": str(ds.parent), "prompts_per_iteration": 10, "heldout_size": 5},
    }
    resources = {
        "storage": StorageResource(home=str(tmp_path / "home")),
        "recipe": RecipeResource(name="snorkel-mistral-pairrm", overrides_json=json.dumps(overrides)),
        "compute": ComputeResource(device="cpu"),
    }
    assert dg.materialize([base_policy, eval_prompts], resources=resources).success
    for i in ("1", "2", "3"):
        res = dg.materialize([prompts], partition_key=i, resources=resources)
        assert res.success
        assert res.get_asset_check_evaluations()[0].passed  # disjoint from the held-out split
    store = ArtifactStore(tmp_path / "home")
    shards = [store.read_frame("prompts", i) for i in ("1", "2", "3")]
    held = store.read_frame("eval_prompts", "all")
    assert [s.height for s in shards] == [10, 10, 10] and held.height == 5
    ids = [set(s["prompt_id"]) for s in [*shards, held]]
    assert len(set().union(*ids)) == 35
    ref = store.current("base_policy", "all")
    loaded, tok = load_policy(ref.path, resolve_compute("cpu"))
    assert loaded.config.hidden_size == 16 and tok.chat_template
    assert json.loads((ref.path / "prefscale_policy.json").read_text())["source"] == str(model)
