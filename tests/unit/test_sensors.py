"""`lf_change_sensor` and `new_prompts_sensor` against a throwaway instance and a temporary recipe file."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

import definitions
from prefscale.config.recipe import RECIPES_DIR
from sensors.jobs import alignment_iteration_job, bootstrap_job
from sensors.sensors import (
    RELABEL_ASSETS,
    lf_change_decision,
    lf_change_sensor,
    new_prompts_decision,
    new_prompts_sensor,
)
from tests.unit.test_schedule import add_run, materialize

KEYS = ["1", "2", "3"]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def embedded() -> dict:
    return yaml.safe_load((RECIPES_DIR / "embedded.yaml").read_text())


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def recipe(tmp_path) -> Path:
    return write_recipe(tmp_path / "team.yaml", embedded())


@pytest.fixture
def file_recipe(tmp_path) -> tuple[Path, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "How do I restart my router?"}\n{"prompt": "Why is my bill higher?"}\n')
    data = embedded()
    data["data"] = {"source": "file", "path": str(prompts), "prompts_per_iteration": 1, "heldout_size": 1}
    data["evaluation"].update(judge="local_llm", judges=["local_llm", "weak_supervision"])  # not the rubric
    return write_recipe(tmp_path / "file.yaml", data), prompts


def drop_last_lf(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    data["labeling"]["functions"] = data["labeling"]["functions"][:-1]
    write_recipe(path, data)


# --- lf_change_sensor ---------------------------------------------------------------------------------


def test_lf_first_tick_records_a_baseline(instance, recipe):
    result = lf_change_decision(instance, recipe, None, KEYS)
    assert not result.run_requests
    assert "baseline" in result.skip_reason.skip_message
    assert len(result.cursor) == 64
    again = lf_change_decision(instance, recipe, result.cursor, KEYS)
    assert not again.run_requests and "unchanged" in again.skip_reason.skip_message
    assert again.cursor == result.cursor


def test_lf_hash_ignores_comments_and_other_sections(instance, recipe):
    cursor = lf_change_decision(instance, recipe, None, KEYS).cursor
    data = yaml.safe_load(recipe.read_text())
    data["generation"]["temperature"] = 0.7
    recipe.write_text("# a comment\n" + yaml.safe_dump(data))
    assert lf_change_decision(instance, recipe, cursor, KEYS).cursor == cursor


def test_lf_change_relabels_the_latest_labeled_iteration(instance, recipe):
    cursor = lf_change_decision(instance, recipe, None, KEYS).cursor
    for k in ("1", "2"):
        materialize(instance, "lf_votes", k)
    drop_last_lf(recipe)
    result = lf_change_decision(instance, recipe, cursor, KEYS)
    assert result.cursor != cursor
    (request,) = result.run_requests
    assert request.partition_key == "2"
    assert request.job_name == alignment_iteration_job.name
    assert request.asset_selection == RELABEL_ASSETS
    assert request.run_key == f"lf-{cursor[:12]}-to-{result.cursor[:12]}-iteration-2"
    assert request.tags["prefscale/labeling_functions"] == str(len(embedded()["labeling"]["functions"]) - 1)
    # the same change evaluated twice gives the same run key (Dagster launches it once)
    assert lf_change_decision(instance, recipe, cursor, KEYS).run_requests[0].run_key == request.run_key


def test_lf_change_with_nothing_labeled_only_moves_the_cursor(instance, recipe):
    cursor = lf_change_decision(instance, recipe, None, KEYS).cursor
    drop_last_lf(recipe)
    result = lf_change_decision(instance, recipe, cursor, KEYS)
    assert not result.run_requests and result.cursor != cursor
    assert "no iteration has lf_votes yet" in result.skip_reason.skip_message


def test_lf_change_waits_for_an_active_iteration_run(instance, recipe):
    cursor = lf_change_decision(instance, recipe, None, KEYS).cursor
    materialize(instance, "lf_votes", "1")
    run_id = add_run(instance, dg.DagsterRunStatus.STARTED, partition="1")
    drop_last_lf(recipe)
    result = lf_change_decision(instance, recipe, cursor, KEYS)
    assert not result.run_requests
    assert result.cursor == cursor  # retried on the next tick
    assert run_id[:8] in result.skip_reason.skip_message


def test_lf_invalid_recipe_skips_and_keeps_the_cursor(instance, recipe):
    cursor = lf_change_decision(instance, recipe, None, KEYS).cursor
    recipe.write_text("name: x\nlabeling: {functions: []}\n")
    result = lf_change_decision(instance, recipe, cursor, KEYS)
    assert not result.run_requests and result.cursor == cursor
    assert "cannot read the recipe" in result.skip_reason.skip_message


def test_lf_change_sensor_through_a_sensor_context(instance, recipe, monkeypatch):
    monkeypatch.setenv("PREFSCALE_RECIPE", str(recipe))
    first = lf_change_sensor(dg.build_sensor_context(instance=instance))
    assert first.cursor and not first.run_requests
    materialize(instance, "lf_votes", "1")
    drop_last_lf(recipe)
    context = dg.build_sensor_context(
        instance=instance, cursor=first.cursor, repository_def=definitions.defs.get_repository_def()
    )
    data = lf_change_sensor.evaluate_tick(context)
    (request,) = data.run_requests
    assert request.partition_key == "1" and request.tags["dagster/partition"] == "1"
    assert data.cursor != first.cursor


def test_sensor_skips_for_an_unknown_recipe(instance, monkeypatch, tmp_path):
    monkeypatch.setenv("PREFSCALE_RECIPE", str(tmp_path / "missing.yaml"))
    result = lf_change_sensor(dg.build_sensor_context(instance=instance, cursor="abc"))
    assert not result.run_requests and result.cursor == "abc"
    assert "missing.yaml" in result.skip_reason.skip_message


# --- new_prompts_sensor -------------------------------------------------------------------------------


def test_prompts_sensor_skips_the_embedded_source(instance, recipe, monkeypatch):
    monkeypatch.setenv("PREFSCALE_RECIPE", str(recipe))
    result = new_prompts_sensor(dg.build_sensor_context(instance=instance))
    assert not result.run_requests and result.cursor is None
    assert "embedded prompt source" in result.skip_reason.skip_message


def test_prompts_first_tick_records_the_file_hash(instance, file_recipe):
    recipe, _ = file_recipe
    result = new_prompts_decision(instance, recipe, None, KEYS)
    assert not result.run_requests and "baseline" in result.skip_reason.skip_message
    again = new_prompts_decision(instance, recipe, result.cursor, KEYS)
    assert not again.run_requests and "unchanged" in again.skip_reason.skip_message


def test_prompts_change_before_any_materialization_only_moves_the_cursor(instance, file_recipe):
    recipe, prompts = file_recipe
    cursor = new_prompts_decision(instance, recipe, None, KEYS).cursor
    prompts.write_text(prompts.read_text() + '{"prompt": "Can I keep my number?"}\n')
    result = new_prompts_decision(instance, recipe, cursor, KEYS)
    assert not result.run_requests and result.cursor != cursor


def test_prompts_change_requests_every_shard_and_the_heldout_split(instance, file_recipe):
    recipe, prompts = file_recipe
    cursor = new_prompts_decision(instance, recipe, None, KEYS).cursor
    materialize(instance, "prompts", "1")
    materialize(instance, "eval_prompts")
    prompts.write_text(prompts.read_text() + '{"prompt": "Can I keep my number?"}\n')
    result = new_prompts_decision(instance, recipe, cursor, KEYS)
    new = result.cursor
    assert new != cursor
    *shards, heldout = result.run_requests
    assert [r.partition_key for r in shards] == KEYS
    assert all(r.asset_selection == [dg.AssetKey("prompts")] for r in shards)
    assert all(r.job_name == alignment_iteration_job.name for r in shards)
    assert [r.run_key for r in shards] == [f"prompts-{cursor[:12]}-to-{new[:12]}-{k}" for k in KEYS]
    assert heldout.job_name == bootstrap_job.name
    assert heldout.asset_selection == [dg.AssetKey("eval_prompts")]  # no base policy: no eval_baseline
    materialize(instance, "base_policy")
    *_, heldout = new_prompts_decision(instance, recipe, cursor, KEYS).run_requests
    assert heldout.asset_selection == [dg.AssetKey("eval_prompts"), dg.AssetKey("eval_baseline")]


def test_prompts_change_waits_for_active_runs(instance, file_recipe):
    recipe, prompts = file_recipe
    cursor = new_prompts_decision(instance, recipe, None, KEYS).cursor
    materialize(instance, "prompts", "1")
    add_run(instance, dg.DagsterRunStatus.QUEUED, job_name=bootstrap_job.name)
    prompts.write_text('{"prompt": "Something else entirely"}\n')
    result = new_prompts_decision(instance, recipe, cursor, KEYS)
    assert not result.run_requests and result.cursor == cursor
    assert "QUEUED" in result.skip_reason.skip_message


def test_prompts_missing_file_skips(instance, file_recipe):
    recipe, prompts = file_recipe
    prompts.unlink()
    result = new_prompts_decision(instance, recipe, "abc", KEYS)
    assert not result.run_requests and result.cursor == "abc"
    assert "not found" in result.skip_reason.skip_message


def test_new_prompts_sensor_through_a_sensor_context(instance, file_recipe, monkeypatch):
    recipe, prompts = file_recipe
    monkeypatch.setenv("PREFSCALE_RECIPE", str(recipe))
    first = new_prompts_sensor(dg.build_sensor_context(instance=instance))
    materialize(instance, "prompts", "1")
    prompts.write_text(prompts.read_text() + '{"prompt": "Is there an outage?"}\n')
    context = dg.build_sensor_context(
        instance=instance, cursor=first.cursor, repository_def=definitions.defs.get_repository_def()
    )
    data = new_prompts_sensor.evaluate_tick(context)
    assert len(data.run_requests) == len(KEYS) + 1
    assert {r.job_name for r in data.run_requests} == {"alignment_iteration_job", "bootstrap_job"}


def test_sensors_are_registered_and_on_by_default():
    names = {s.name for s in definitions.defs.sensors}
    assert {"lf_change_sensor", "new_prompts_sensor"} <= names
    for s in (lf_change_sensor, new_prompts_sensor):
        assert s.default_status == dg.DefaultSensorStatus.RUNNING
