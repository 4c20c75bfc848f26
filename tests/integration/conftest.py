"""A whole-graph run on a small config, shared by the integration tests (the expensive part runs once)."""

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from prefscale.artifacts import ITERATION_ASSETS as RECIPE_ITERATION_ASSETS

SMALL = {
    "policy": {
        "embedded": {
            "vocab_size": 400,
            "hidden_size": 48,
            "num_layers": 1,
            "num_heads": 2,
            "intermediate_size": 96,
            "corpus_prompts": 120,
            "responses_per_prompt": 2,
            "train_steps": 80,
            "batch_size": 16,
        }
    },
    "data": {"pool_size": 60, "prompts_per_iteration": 12, "heldout_size": 6},
    "generation": {"num_candidates": 3, "max_new_tokens": 48, "batch_size": 64},
    "dpo": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 160},
    "evaluation": {"samples_per_prompt": 2},
}

# The instance's python_logs as `make run` has them (dagster.yaml): the core's progress lines reach the run log.
DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
INSTANCE_OVERRIDES = {"python_logs": yaml.safe_load(DAGSTER_YAML.read_text())["python_logs"]}
ITERATION_ASSETS = list(RECIPE_ITERATION_ASSETS)  # what one iteration of `make run` starts with
BOOTSTRAP_ASSETS = ["base_policy", "eval_prompts", "eval_baseline"]


@dataclass
class Pipeline:
    home: Path
    instance: dg.DagsterInstance
    assets: list
    resources: dict

    def materialize(
        self, selection: list[str] | str, partition: str | None = None
    ) -> dg.ExecuteInProcessResult:
        sel = (
            dg.AssetSelection.groups("warehouse")
            if selection == "warehouse"
            else dg.AssetSelection.assets(*selection)
        )
        return dg.materialize(
            self.assets,
            selection=sel,
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
        )


def small_resources(home: Path) -> dict:
    from resources import default_resources

    return default_resources(home=str(home), recipe="embedded", overrides_json=json.dumps(SMALL))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Bootstrap, three iterations in order, then the dbt warehouse — all through Dagster."""
    home = tmp_path_factory.mktemp("prefscale_home")
    saved = os.environ.get("PREFSCALE_HOME")
    resources = small_resources(home)
    import definitions

    assets = list(definitions.defs.assets)
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster"), overrides=INSTANCE_OVERRIDES) as instance:
        p = Pipeline(home=home, instance=instance, assets=assets, resources=resources)
        assert p.materialize(BOOTSTRAP_ASSETS).success
        for i in ("1", "2", "3"):
            assert p.materialize(ITERATION_ASSETS, partition=i).success
        assert p.materialize("warehouse").success
        yield p
    if saved is None:
        os.environ.pop("PREFSCALE_HOME", None)
    else:
        os.environ["PREFSCALE_HOME"] = saved
