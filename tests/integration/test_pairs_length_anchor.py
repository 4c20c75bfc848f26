"""`preference_pairs[2]` with `pairs.length_control: anchored`, through Dagster: it charges length against the
slope and mean length fitted on iteration 1's candidates (the base policy's), and records them as its inputs."""

import json
import math
from pathlib import Path

import dagster as dg
import pytest

import definitions
from prefscale.pairs.selection import base_length_anchor
from prefscale.storage import ArtifactStore
from resources import default_resources
from tests.integration.conftest import SMALL
from tests.integration.small_home import build_small_home, tiny_policy

pytestmark = pytest.mark.integration


def test_iteration_two_is_anchored_on_the_base_candidates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    build_small_home(home, tiny_policy(tmp_path / "policy"), iterations=2, upto="preference_pairs")
    overrides = {**SMALL, "pairs": {"length_control": "anchored"}}
    result = dg.materialize(
        list(definitions.defs.assets),
        selection=dg.AssetSelection.assets("preference_pairs"),
        partition_key="2",
        resources=default_resources(home=str(home), recipe="embedded", overrides_json=json.dumps(overrides)),
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    store = ArtifactStore(home)
    expected = base_length_anchor(store.read_frame("candidates", "1"), store.read_frame("reward_scores", "1"))
    assert expected.slope > 0  # small_home: longer is better
    own = base_length_anchor(store.read_frame("candidates", "2"), store.read_frame("reward_scores", "2"))
    assert own.slope != pytest.approx(expected.slope)  # so the one recorded is not refitted on iteration 2
    ref = store.current("preference_pairs", "2")
    manifest = store.manifest(ref)
    assert manifest["params"]["length_anchor_log_chars"] == pytest.approx(expected.log_chars)
    assert manifest["params"]["length_slope_removed"] == pytest.approx(expected.slope)
    inputs = {(x["asset"], x["partition"]) for x in manifest["inputs"]}
    assert {("candidates", "1"), ("reward_scores", "1"), ("candidates", "2")} <= inputs
    meta = result.asset_materializations_for_node("preference_pairs")[0].metadata
    assert meta["length_control"].value == (
        f"length slope removed: {expected.slope:.4f} per log-char beyond "
        f"{math.expm1(expected.log_chars):.0f} chars (the base's geometric mean)"
    )
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
