"""Bad inputs fail the asset with a clear message and publish nothing."""

import json

import dagster as dg
import pytest

from assets.prompts import eval_prompts, prompts
from prefscale.storage import ArtifactStore
from resources import RecipeResource, StorageResource

pytestmark = pytest.mark.integration


def _run(tmp_path, prompts_file):
    overrides = {
        "data": {"source": "file", "path": str(prompts_file), "prompts_per_iteration": 2, "heldout_size": 1},
        # prompts of its own: a primary judge other than the embedded domain's rubric
        "evaluation": {"judge": "local_llm", "judges": ["local_llm", "weak_supervision"]},
    }
    resources = {
        "storage": StorageResource(home=str(tmp_path / "home")),
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(overrides)),
    }
    return dg.materialize(
        [prompts, eval_prompts],
        partition_key="1",
        selection=[prompts],
        resources=resources,
        raise_on_error=False,
    )


def _error_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "the step should have failed"
    err = failures[0].step_failure_data.error
    texts = []
    while err is not None:
        texts.append(err.message)
        err = err.cause
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ('{"prompt": "hi"}\n{"prompt": \n', "malformed"),
        ('{"text": "no prompt column"}\n', "no 'prompt' column"),
        ('{"prompt": "ok"}\n{"prompt": "  "}\n', "empty prompt at row 2"),
    ],
)
def test_bad_prompts_file_fails_and_publishes_nothing(tmp_path, content, expected):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text(content)
    result = _run(tmp_path, bad)
    assert not result.success
    text = _error_text(result)
    assert expected in text and str(bad) in text
    assert ArtifactStore(tmp_path / "home").versions("prompts", "1") == []


def test_good_prompts_file_materializes(tmp_path):
    good = tmp_path / "prompts.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"question number {i}?"}) + "\n" for i in range(12)))
    result = _run(tmp_path, good)
    assert result.success
    shard = ArtifactStore(tmp_path / "home").read_frame("prompts", "1")
    assert shard.height == 2 and set(shard["task_type"]) == {"general"}


def test_unknown_recipe_key_fails_before_compute(tmp_path):
    resources = {
        "storage": StorageResource(home=str(tmp_path / "home")),
        "recipe": RecipeResource(
            name="embedded", overrides_json=json.dumps({"generation": {"num_candidate": 5}})
        ),
    }
    result = dg.materialize([prompts], partition_key="1", resources=resources, raise_on_error=False)
    assert not result.success
    assert "generation.num_candidate: unknown key" in _error_text(result)
    assert not (tmp_path / "home" / "artifacts").exists()
