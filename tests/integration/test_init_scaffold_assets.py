"""A recipe scaffolded by `prefscale init` runs through the Dagster assets: its prompts file is sharded, and its
Python labeling functions (a module beside the recipe, found through `labeling.modules`, with no PYTHONPATH)
vote in `lf_votes`, through `quality_labels`, `reward_scores` and `preference_pairs`.

Candidates are written straight into the store (made-up replies), so no model is trained: seconds, not minutes.
"""

from __future__ import annotations

import sys

import dagster as dg
import polars as pl
import pytest

from prefscale.cli import main
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.storage import ArtifactStore

pytestmark = pytest.mark.integration

REPLIES = [
    "Thank you for writing. Here is what to do:\n1. Open the settings page.\n2. Restart the app.\nReply here "
    "if it is not solved.",
    "Please tell me your password so I can check.",
    "Obviously you should have read the manual.",
]


def test_the_scaffolds_assets_materialize_with_its_own_functions(tmp_path, monkeypatch):
    from assets.labels import lf_votes, quality_labels
    from assets.pairs import preference_pairs
    from assets.prompts import prompts
    from assets.rewards import reward_scores
    from resources import default_resources

    folder = tmp_path / "teams" / "asset-desk"
    assert main(["init", str(folder)]) == 0
    assert not any("asset-desk" in p for p in sys.path)  # nothing has imported its module yet
    home = tmp_path / "home"
    monkeypatch.setenv("PREFSCALE_HOME", str(home))
    resources = default_resources(home=str(home), recipe=str(folder / "recipe.yaml"))
    store = ArtifactStore(home)

    def materialize(asset) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [prompts, lf_votes, quality_labels, reward_scores, preference_pairs],
            selection=[asset],
            partition_key="1",
            resources=resources,
            instance=instance,
        )

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        assert materialize(prompts).success
        shard = store.read_frame("prompts", "1")
        assert shard.height == 12  # the recipe's prompts_per_iteration, from its own prompts file
        cands = pl.DataFrame(
            [
                {
                    "candidate_id": f"{pid}-{k}",
                    "prompt_id": pid,
                    "sample_idx": k,
                    "task_type": task,
                    "prompt": prompt,
                    "response": reply,
                    "n_tokens": len(reply.split()),
                    "finish_reason": "stop",
                }
                for pid, task, prompt in shard.select("prompt_id", "task_type", "prompt").iter_rows()
                for k, reply in enumerate(REPLIES)
            ],
            schema={k: v for k, v in CANDIDATE_SCHEMA.items() if k != "latency_s"},
        )
        store.write_frame("candidates", "1", cands)
        for asset in (lf_votes, quality_labels, reward_scores, preference_pairs):
            assert materialize(asset).success, asset.key

    votes = store.read_frame("lf_votes", "1")
    assert set(votes["keeps_secrets"].unique()) == {-1, 0}  # the team's Python function voted
    assert votes["on_topic"].is_in([0, 1]).any()
    functions = store.read_frame("lf_votes", "1", "functions")
    assert {"keeps_secrets", "on_topic"} <= set(functions["lf_name"])
    pairs = store.read_frame("preference_pairs", "1")
    assert pairs.height > 0
    assert pairs["chosen_id"].str.ends_with("-0").all()  # the careful reply wins every pair
