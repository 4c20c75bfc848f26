"""Non-embedded recipes: `base_policy` resolves a model folder (or hub id) and records its hash."""

import json

import dagster as dg
import pytest

from assets.policy import base_policy
from prefscale.compute import resolve_compute
from prefscale.config.policy import EmbeddedModel
from prefscale.data import domain
from prefscale.policy.tiny import pretrain_tiny_llama
from prefscale.storage import ArtifactStore, digest_folder
from resources import ComputeResource, RecipeResource, StorageResource

pytestmark = pytest.mark.integration


def _resources(tmp_path, model: str) -> dict:
    overrides = {"policy": {"source": "pretrained", "model": model}}
    return {
        "storage": StorageResource(home=str(tmp_path / "home")),
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(overrides)),
        "compute": ComputeResource(device="cpu"),
    }


def test_pretrained_folder_becomes_base_policy(tmp_path):
    src = tmp_path / "my-model"
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
    pretrain_tiny_llama(corpus, cfg, src, resolve_compute("cpu"), seed=0)
    result = dg.materialize([base_policy], resources=_resources(tmp_path, str(src)))
    assert result.success
    ref = ArtifactStore(tmp_path / "home").current("base_policy", "all")
    info = json.loads((ref.path / "prefscale_policy.json").read_text())
    assert info["source"] == str(src)
    meta = result.asset_materializations_for_node("base_policy")[0].metadata
    assert meta["sha256"].value == ref.digest == digest_folder(ref.path)
    assert meta["model"].value == str(src)


def test_missing_model_path_is_a_recipe_error(tmp_path):
    result = dg.materialize(
        [base_policy], resources=_resources(tmp_path, "./no/such/model"), raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "policy.model path does not exist: ./no/such/model" in str(
        failure.step_failure_data.error.cause or failure.step_failure_data.error
    )
    assert not (tmp_path / "home" / "artifacts").exists()
