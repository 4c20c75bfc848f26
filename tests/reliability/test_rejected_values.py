"""Bad values met inside a step, one row each: labeling functions that raise or vote outside {1, 0, -1} while
applied, SME annotation files, and malformed answers of an OpenAI-compatible endpoint. The error is of the
step's own type and names the bad thing (the function and row, the file and line, the URL)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from prefscale.config.generation import EndpointSettings
from prefscale.generation.base import Sampling
from prefscale.generation.endpoint_backend import EndpointBackend, EndpointError
from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.gold import AnnotationsRejected, load_annotations
from prefscale.labeling.pattern_kinds import PythonLF
from prefscale.labeling.votes import LabelingFunctionError
from tests.fake_openai_server import FakeServer

ROWS = pl.DataFrame(
    {
        "candidate_id": ["c0", "c1", "c2"],
        "prompt_id": ["p0", "p0", "p1"],
        "task_type": ["general"] * 3,
        "prompt": ["Reset my router?", "Reset my router?", "Cancel my plan?"],
        "response": ["Unplug it.", "Call us.", "Sure, here is how."],
        "finish_reason": ["stop"] * 3,
    }
)
TEAM_LFS = """
def raises_on_cancel(row):
    if "Cancel" in row["prompt"]:
        raise KeyError("customer_tier")
    return 1

def votes_yes(row):
    return "yes"

def votes_two(row):
    return 2

def votes_float(row):
    return 1.0
"""
CANDIDATES = pl.DataFrame(
    [(f"p1-{k}", "p1", "1") for k in range(3)],
    schema=["candidate_id", "prompt_id", "iteration"],
    orient="row",
)


@dataclass(frozen=True)
class ValueCase:
    id: str
    run: Callable[[Path], object]  # raises
    error: type[Exception]
    expect: str


def _lf(fn: str) -> Callable[[Path], object]:
    return lambda d: apply_lfs(ROWS, [PythonLF(name=fn, callable=f"reliability_team_lfs:{fn}")])


def _annotations(*lines: str | dict, name: str = "sme.jsonl") -> Callable[[Path], object]:
    def run(d: Path) -> object:
        folder = d / "annotations"
        folder.mkdir()
        text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
        (folder / name).write_text(text)
        return load_annotations(folder, CANDIDATES)

    return run


def _endpoint(mode: str) -> Callable[[Path], object]:
    def run(d: Path) -> object:
        server = FakeServer(mode)
        try:
            settings = EndpointSettings(base_url=server.url, model="policy", timeout_s=2.0, max_retries=0)
            backend = EndpointBackend(settings, Sampling(max_new_tokens=8, temperature=0.7, top_p=0.9))
            return backend.generate(
                ROWS.select("prompt_id", "task_type", "prompt").unique("prompt_id"), 1, seed=0
            )
        finally:
            server.close()

    return run


CASES = [
    ValueCase("lf-raises-on-a-row", _lf("raises_on_cancel"), LabelingFunctionError, "raises_on_cancel"),
    ValueCase("lf-votes-a-string", _lf("votes_yes"), LabelingFunctionError, "returned 'yes'"),
    ValueCase("lf-votes-out-of-range", _lf("votes_two"), LabelingFunctionError, "returned 2"),
    ValueCase("lf-votes-a-float", _lf("votes_float"), LabelingFunctionError, "returned 1.0 for candidate c0"),
    ValueCase(
        "annotation-invalid-json", _annotations('{"candidate_id": "p1-0",'), AnnotationsRejected, "sme.jsonl"
    ),
    ValueCase(
        "annotation-unknown-candidate",
        _annotations({"candidate_id": "p9-0", "label": "high"}),
        AnnotationsRejected,
        "p9-0",
    ),
    ValueCase(
        "annotation-bad-label",
        _annotations({"candidate_id": "p1-0", "label": "great"}),
        AnnotationsRejected,
        "great",
    ),
    ValueCase(
        "annotation-unknown-field",
        _annotations({"candidate_id": "p1-0", "label": "high", "mood": "happy"}),
        AnnotationsRejected,
        "mood",
    ),
    ValueCase(
        "annotation-twice-labelled",
        _annotations({"candidate_id": "p1-0", "label": "high"}, {"candidate_id": "p1-0", "label": "low"}),
        AnnotationsRejected,
        "p1-0",
    ),
    ValueCase(
        "annotation-ranking-foreign-candidate",
        _annotations({"prompt_id": "p1", "ranking": ["p1-0", "p7-1"]}),
        AnnotationsRejected,
        "p7-1",
    ),
    ValueCase("endpoint-answer-not-json", _endpoint("not_json"), EndpointError, "the answer is not JSON"),
    ValueCase("endpoint-answer-no-choices", _endpoint("no_choices"), EndpointError, "not a chat completion"),
    ValueCase("endpoint-answer-null-content", _endpoint("null_content"), EndpointError, "not text"),
    ValueCase("endpoint-answer-bad-finish", _endpoint("bad_finish"), EndpointError, "'banana'"),
]


@pytest.fixture(autouse=True)
def team_module(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The team's LF module, importable as `reliability_team_lfs`."""
    d = tmp_path_factory.getbasetemp() / "team_lfs"
    d.mkdir(exist_ok=True)
    (d / "reliability_team_lfs.py").write_text(TEAM_LFS)
    monkeypatch.syspath_prepend(str(d))
    sys.modules.pop("reliability_team_lfs", None)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_value_fails_the_step_naming_it(case: ValueCase, tmp_path):
    with pytest.raises(case.error) as e:
        case.run(tmp_path)
    assert case.expect in str(e.value), str(e.value)
