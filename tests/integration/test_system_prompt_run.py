"""`policy.system_prompt` through the Dagster assets of one iteration, on a copy of the shared pipeline's home:
the same system message in candidates, pairs, curated SFT, DPO and evaluation, recorded in each manifest; a
system message too long for `dpo.max_length` fails before any sampling and publishes nothing."""

import json
import shutil

import dagster as dg
import pytest

import definitions
from prefscale.config.recipe import deep_merge
from prefscale.policy.chat import prompt_messages
from prefscale.storage import ArtifactStore
from resources import RecipeResource, StorageResource
from tests.integration.conftest import SMALL

pytestmark = pytest.mark.integration

SYSTEM = "You are Lumora's support assistant."
ASSETS = [
    "candidates",
    "lf_votes",
    "quality_labels",
    "reward_scores",
    "preference_pairs",
    "curated_sft",
    "dpo_checkpoint",
    "eval_results",
]


def _run(pipeline, home, system: str, assets: list[str]) -> dg.ExecuteInProcessResult:
    overrides = deep_merge(SMALL, {"policy": {"system_prompt": system}})
    resources = {
        **pipeline.resources,
        "storage": StorageResource(home=str(home)),
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(overrides)),
    }
    return dg.materialize(
        list(definitions.defs.assets),
        selection=dg.AssetSelection.assets(*assets),
        partition_key="1",
        resources=resources,
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def home(pipeline, tmp_path_factory):
    copy = tmp_path_factory.mktemp("system_prompt") / "home"
    shutil.copytree(pipeline.home, copy, symlinks=True)
    return copy


def test_one_system_message_everywhere_and_in_the_manifests(pipeline, home):
    store = ArtifactStore(home)
    before = store.current("candidates", "1")
    assert _run(pipeline, home, SYSTEM, ASSETS).success
    cands = store.current("candidates", "1")
    assert cands.version != before.version  # another system message, other samples
    assert store.manifest(cands)["params"]["sampling"]["system_prompt"] == SYSTEM
    pairs_ref = store.current("preference_pairs", "1")
    assert store.manifest(pairs_ref)["params"]["system_prompt"] == SYSTEM
    pairs = store.read_frame("preference_pairs", "1")
    for prompt, chosen in zip(pairs["prompt"].to_list(), pairs["chosen"].to_list(), strict=True):
        assert prompt == prompt_messages(prompt[1]["content"], SYSTEM) and chosen[0]["role"] == "assistant"
    sft = store.read_frame("curated_sft", "1")
    assert {m[0]["content"] for m in sft["messages"].to_list()} == {SYSTEM}
    ckpt = store.current("dpo_checkpoint", "1")
    assert json.loads((ckpt.path / "prefscale_checkpoint.json").read_text())["iteration"] == 1
    assert store.manifest(store.current("eval_results", "1"))["params"]["system_prompt"] == SYSTEM


def test_a_system_prompt_longer_than_max_length_fails_before_sampling(pipeline, home):
    store = ArtifactStore(home)
    versions = store.versions("candidates", "1")
    result = _run(pipeline, home, "Please read this carefully. " * 40, ["candidates"])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    text = failure.event_specific_data.error.to_string()
    assert "policy.system_prompt is" in text and f"dpo.max_length={SMALL['dpo']['max_length']}" in text
    assert store.versions("candidates", "1") == versions
