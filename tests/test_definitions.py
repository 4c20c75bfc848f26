"""Snapshot of the Dagster definitions (a lineage guard): every asset, check, job, schedule and sensor.

`snapshot()` serializes `definitions.defs` deterministically (sorted keys and lists) and the test compares it
with tests/snapshots/definitions.json; on a difference it fails with a unified diff. After an intended change:

    make snapshot          # UPDATE_SNAPSHOTS=1: rewrites the file; review it with `git diff tests/snapshots/`

Per asset: group, deps (with any non-default partition mapping), partitions (type and keys), its checks (name,
blocking), kinds, pools, code_version, automation condition, tags (the kind tags are in `kinds`) and owners.
Per job: its selection resolved to asset keys and its partitions; per schedule: cron, job, timezone and default
status; per sensor: kind, target jobs, minimum interval and default status; and the bound resources by class.
Descriptions and metadata are left out (prose and paths, not lineage). The graph depends on the recipe the code
location is built for (PREFSCALE_RECIPE: the iteration partitions, best_of_n): the snapshot is of the default
recipe (`embedded`, which `make snapshot` pins), records it, and is skipped under another one.

Besides the snapshot: the definitions load, every required resource is bound, the iteration assets chain in
the order `prefscale.artifacts.ITERATION_ASSETS` gives, and the weekly refresh job materializes exactly what
`make run` does.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

import definitions
from prefscale.artifacts import ITERATION_ASSETS
from prefscale.cli import main
from prefscale.config.recipe import RECIPES_DIR, iteration_assets, load_recipe
from sensors.jobs import iteration_run_assets
from sensors.schedules import weekly_refresh_schedule

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
SNAPSHOT_RECIPE = "embedded"  # the default recipe (Makefile RECIPE, PREFSCALE_RECIPE): the one snapshotted
UPDATE_COMMAND = "make snapshot"
KIND_TAG = "dagster/kind/"


def _recipe() -> str:
    return os.environ.get("PREFSCALE_RECIPE", "embedded")


def _key(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _keys(keys) -> list[str]:
    return sorted(_key(k) for k in keys)


def _partitions(pd: dg.PartitionsDefinition | None) -> dict[str, Any] | None:
    if pd is None:
        return None
    out: dict[str, Any] = {"type": type(pd).__name__}
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):  # keys grow with time: describe the definition
        out.update(cron=pd.cron_schedule, start=pd.start.isoformat(), timezone=pd.timezone, fmt=pd.fmt)
    elif isinstance(pd, dg.DynamicPartitionsDefinition):  # keys live in the instance
        out["name"] = pd.name
    elif isinstance(pd, dg.MultiPartitionsDefinition):
        out["dimensions"] = {d.name: _partitions(d.partitions_def) for d in pd.partitions_defs}
    else:
        out["keys"] = list(pd.get_partition_keys())
    return out


def _assets(defs: dg.Definitions) -> dict[str, Any]:
    graph = defs.resolve_asset_graph()
    checks: dict[str, list[dict[str, Any]]] = {}
    for ck in graph.asset_check_keys:
        checks.setdefault(_key(ck.asset_key), []).append(
            {"name": ck.name, "blocking": graph.get(ck).blocking}
        )
    out = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        condition = node.automation_condition
        out[_key(key)] = {
            "group": node.group_name,
            "deps": _keys(node.parent_keys),
            "partition_mappings": {_key(k): repr(m) for k, m in node.partition_mappings.items()},
            "partitions": _partitions(node.partitions_def),
            "checks": sorted(checks.get(_key(key), []), key=lambda c: c["name"]),
            "kinds": sorted(node.kinds),
            "pools": sorted(node.pools or []),
            "code_version": node.code_version,
            "automation_condition": (condition.get_label() or repr(condition)) if condition else None,
            "tags": {k: v for k, v in sorted(node.tags.items()) if not k.startswith(KIND_TAG)},
            "owners": sorted(node.owners),
        }
    return out


def _jobs(defs: dg.Definitions) -> dict[str, Any]:
    out = {}
    for unresolved in defs.jobs or []:
        job = defs.resolve_job_def(unresolved.name)
        out[job.name] = {
            "selection": _keys(job.asset_layer.selected_asset_keys),
            "partitions": _partitions(job.partitions_def),
            "tags": dict(sorted(job.tags.items())),
        }
    return out


def _schedules(defs: dg.Definitions) -> dict[str, Any]:
    return {
        s.name: {
            "cron": s.cron_schedule,
            "job": s.job_name,
            "timezone": s.execution_timezone,
            "default_status": s.default_status.value,
        }
        for s in defs.schedules or []
    }


def _sensors(defs: dg.Definitions) -> dict[str, Any]:
    return {
        s.name: {
            "kind": s.sensor_type.value,
            "jobs": sorted(t.job_name for t in s.targets),
            "asset_selection": _keys(s.asset_selection.resolve(defs.resolve_asset_graph()))
            if s.asset_selection is not None
            else None,
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in defs.sensors or []
    }


def snapshot(defs: dg.Definitions = definitions.defs) -> dict[str, Any]:
    """The definitions as plain, deterministically ordered data (what tests/snapshots/definitions.json holds)."""
    return {
        "recipe": _recipe(),
        "assets": _assets(defs),
        "jobs": _jobs(defs),
        "schedules": _schedules(defs),
        "sensors": _sensors(defs),
        "resources": {k: type(v).__name__ for k, v in sorted((defs.resources or {}).items())},
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_definitions_snapshot():
    if _recipe() != SNAPSHOT_RECIPE:
        pytest.skip(
            f"the snapshot is of the {SNAPSHOT_RECIPE} recipe; PREFSCALE_RECIPE={_recipe()!r} builds another graph"
        )
    current = render(snapshot())
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current)
        return
    if not SNAPSHOT.is_file():
        pytest.fail(f"{SNAPSHOT} is missing: run `{UPDATE_COMMAND}` to write it", pytrace=False)
    stored = SNAPSHOT.read_text()
    if current != stored:
        diff = "".join(
            difflib.unified_diff(
                stored.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.relative_to(SNAPSHOT.parents[2])} (stored)",
                tofile="definitions.defs (current)",
            )
        )
        pytest.fail(
            f"the Dagster definitions differ from the snapshot:\n\n{diff}\n"
            f"If the change is intended, run `{UPDATE_COMMAND}` and commit tests/snapshots/definitions.json.",
            pytrace=False,
        )


def test_definitions_load():
    dg.Definitions.validate_loadable(definitions.defs)


def test_every_required_resource_is_bound():
    bound = set(definitions.defs.resources or {}) | {"io_manager"}  # Dagster binds a default io_manager
    graph = definitions.defs.resolve_asset_graph()
    for assets_def in graph.assets_defs:
        missing = assets_def.required_resource_keys - bound
        assert not missing, (assets_def.keys, missing)


def test_iteration_assets_chain_in_order_and_share_the_iteration_partitions():
    graph = definitions.defs.resolve_asset_graph()
    recipe = load_recipe(_recipe())
    for name in iteration_assets(recipe):
        pd = graph.get(dg.AssetKey(name)).partitions_def
        assert pd is not None and pd.get_partition_keys() == [
            str(i) for i in range(1, recipe.iterations + 1)
        ], name
    for before, after in itertools.pairwise(ITERATION_ASSETS):
        assert dg.AssetKey(before) in graph.get(dg.AssetKey(after)).parent_keys, (before, after)


def _make_run_selection(recipe: str, capsys) -> set[dg.AssetKey]:
    """What an iteration of `make run` materializes: `$(prefscale recipe iteration-assets)`, and with the last
    iteration `group:warehouse` (the Makefile's `run` target), resolved the way `dagster asset materialize`
    resolves `--select`."""
    assert main(["recipe", "iteration-assets", recipe]) == 0
    assets = capsys.readouterr().out.strip()
    graph = definitions.defs.resolve_asset_graph()
    iteration = dg.AssetSelection.from_coercible(assets.split(",")).resolve(graph)
    warehouse = dg.AssetSelection.from_coercible(["group:warehouse"]).resolve(graph)
    return iteration | warehouse


def test_weekly_refresh_job_materializes_what_make_run_does(capsys):
    job = definitions.defs.resolve_job_def(weekly_refresh_schedule.job_name)
    expected = _make_run_selection(_recipe(), capsys)
    assert set(job.asset_layer.selected_asset_keys) == expected
    assert dg.AssetKey("alpaca_eval_results") in expected
    iterations = load_recipe(_recipe()).iterations
    assert job.partitions_def.get_partition_keys() == [str(i) for i in range(1, iterations + 1)]


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_weekly_assets_follow_the_code_locations_recipe(recipe, monkeypatch, capsys):
    """The weekly job's iteration assets are `iteration_assets` of PREFSCALE_RECIPE (best_of_n only when on)."""
    assert main(["recipe", "iteration-assets", recipe]) == 0
    monkeypatch.setenv("PREFSCALE_RECIPE", recipe)
    assert ",".join(iteration_run_assets()) == capsys.readouterr().out.strip()
