"""Evaluation sets: local files (validated), the Hub path (mocked: no network), held-out and eval-set pairs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.recipe import load_recipe
from prefscale.evaluation import eval_sets
from prefscale.evaluation.eval_sets import (
    ALPACA_EVAL_GENERATOR,
    EvalSetError,
    eval_set_pairs,
    heldout_pairs,
    load_alpaca_eval,
    load_eval_file,
    load_eval_set,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alpaca_eval_judge" / "eval_set.jsonl"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def write(path: Path, recs: list, *, array: bool = False) -> Path:
    text = json.dumps(recs, indent=1) if array else "".join(json.dumps(r) + "\n" for r in recs)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_local_jsonl_file(rows):
    es = load_eval_file(FIXTURE)
    assert es.kind == "file" and es.source == str(FIXTURE)
    assert es.frame.columns == ["prompt_id", "instruction", "reference", "generator", "dataset"]
    assert es.frame["instruction"].to_list() == [r["instruction"] for r in rows]
    assert es.frame["reference"].to_list() == [r["output"] for r in rows]
    assert es.generator == "fixture_reference"
    assert es.frame["prompt_id"].n_unique() == len(rows)
    assert load_eval_file(FIXTURE).sha256 == es.sha256  # stable identity
    assert es.head(2).frame.height == 2 and es.head(2).sha256 != es.sha256


def test_array_gzip_and_reference_output_alias(tmp_path, rows):
    alias = [
        {"instruction": r["instruction"], "reference_output": r["output"], "dataset": r["dataset"]}
        for r in rows
    ]
    a = load_eval_file(write(tmp_path / "set.json", rows, array=True))
    b = load_eval_file(write(tmp_path / "set.jsonl.gz", rows))
    c = load_eval_file(write(tmp_path / "alias.jsonl", alias), default_generator="fixture_reference")
    ref = load_eval_file(FIXTURE)
    for es in (a, b, c):
        assert es.frame.drop("prompt_id").equals(ref.frame.drop("prompt_id"))
        assert es.frame["prompt_id"].to_list() == ref.frame["prompt_id"].to_list()


@pytest.mark.parametrize(
    ("mutate", "line", "reason"),
    [
        (lambda rs: rs[2].pop("output"), 3, "missing key output"),
        (lambda rs: rs[0].pop("instruction"), 1, "missing key instruction"),
        (lambda rs: rs[1].update(instruction=7), 2, "instruction must be a string"),
        (lambda rs: rs[4].update(output="   "), 5, "output is empty"),
        (
            lambda rs: rs[3].update(instruction=rs[0]["instruction"]),
            4,
            "duplicate instruction (first on line 1)",
        ),
        (lambda rs: rs[5].update(reference_output="other"), 6, "output and reference_output differ"),
        (lambda rs: rs[2].update(generator=["x"]), 3, "generator must be a string"),
        (lambda rs: rs.__setitem__(1, ["not", "an", "object"]), 2, "expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_reason(tmp_path, rows, mutate, line, reason):
    recs = json.loads(json.dumps(rows))
    mutate(recs)
    path = write(tmp_path / "bad.jsonl", recs)
    with pytest.raises(EvalSetError) as e:
        load_eval_file(path)
    assert e.value.line == line
    assert reason in e.value.reason
    assert str(e.value).startswith(f"{path}: line {line}: ")


def test_bad_files(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(EvalSetError, match=r"broken.jsonl: line 2: invalid JSON"):
        load_eval_file(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(EvalSetError, match="no instructions in the file"):
        load_eval_file(empty)
    with pytest.raises(EvalSetError, match="no such file"):
        load_eval_file(tmp_path / "missing.jsonl")


@pytest.fixture
def no_hub(monkeypatch):
    """Both Hub routes fail as they do offline; nothing reaches the network."""
    import datasets
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("offline mode is enabled (HF_HUB_OFFLINE=1)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_alpaca_eval_offline_is_a_clear_error(no_hub):
    with pytest.raises(EvalSetError) as e:
        load_eval_set("alpaca_eval")
    msg = str(e.value)
    assert "tatsu-lab/alpaca_eval" in msg and "Hugging Face Hub" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert "evaluation.reference to a JSON/JSONL file" in msg  # the way out


def test_alpaca_eval_through_datasets(no_hub, monkeypatch, rows):
    import datasets

    calls = []

    def fake_load_dataset(repo, config, **kwargs):
        calls.append((repo, config))
        return {"eval": [{**r, "generator": ALPACA_EVAL_GENERATOR} for r in rows]}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    es = load_alpaca_eval()
    assert calls == [("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline")]
    assert es.kind == "alpaca_eval" and es.generator == ALPACA_EVAL_GENERATOR
    assert es.frame.height == len(rows)
    assert load_eval_set("alpaca_eval", size=2).frame.height == 2


def test_alpaca_eval_falls_back_to_the_json_file(no_hub, monkeypatch, tmp_path, rows):
    """datasets >= 4 refuses the repository's loading script: the plain JSON file in the repo is the fallback."""
    import huggingface_hub

    local = write(tmp_path / "alpaca_eval_gpt4_baseline.json", rows, array=True)
    seen = []

    def fake_download(repo, filename, **kwargs):
        seen.append((repo, filename, kwargs.get("repo_type")))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    es = load_alpaca_eval()
    assert seen == [("tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json", "dataset")]
    assert es.frame["reference"].to_list() == [r["output"] for r in rows]


def test_heldout_base_is_not_a_file_set():
    with pytest.raises(ValueError, match="eval_prompts / eval_baseline"):
        load_eval_set(eval_sets.HELDOUT_BASE)


def _samples(responses: list[str], finish: list[str] | None = None) -> pl.DataFrame:
    n = len(responses)
    return pl.DataFrame(
        {
            "prompt_id": [f"p{k // 2}" for k in range(n)],
            "sample_idx": [k % 2 for k in range(n)],
            "task_type": ["billing"] * n,
            "prompt": [f"prompt {k // 2}" for k in range(n)],
            "response": responses,
            "n_tokens": [3] * n,
            "finish_reason": finish or ["stop"] * n,
        },
        schema_overrides={"sample_idx": pl.Int32, "n_tokens": pl.Int32},
    )


def test_heldout_pairs_align_by_prompt_and_sample():
    base = _samples(["b0", "b1", "b2", "b3"])
    model = _samples(["m0", "m1", "m2", "m3"], ["stop", "length", "stop", "stop"]).reverse()
    pairs = heldout_pairs(model, base)
    assert pairs["output_1"].to_list() == ["b0", "b1", "b2", "b3"]
    assert pairs["output_2"].to_list() == ["m0", "m1", "m2", "m3"]
    assert pairs["finished_2"].to_list() == [True, False, True, True]
    assert pairs["instruction"].to_list() == ["prompt 0", "prompt 0", "prompt 1", "prompt 1"]
    with pytest.raises(ValueError, match="different"):
        heldout_pairs(model.head(3), base)


def test_eval_set_pairs():
    es = load_eval_file(FIXTURE)
    samples = pl.DataFrame(
        {
            "prompt_id": es.frame["prompt_id"],
            "sample_idx": [0] * es.frame.height,
            "response": [f"answer {k}" for k in range(es.frame.height)],
            "finish_reason": ["stop"] * es.frame.height,
        }
    )
    pairs = eval_set_pairs(es, samples)
    assert pairs.height == es.frame.height
    joined = pairs.join(es.frame, on="prompt_id")
    assert (joined["output_1"] == joined["reference"]).all()
    assert (joined["task_type"] == joined["dataset"]).all()
    with pytest.raises(ValueError, match="lack 1"):
        eval_set_pairs(es, samples.head(5))


def test_recipe_evaluation_section(tmp_path):
    assert load_recipe("embedded").evaluation.all_judges[0] == "rubric"
    assert EvaluationConfig().all_judges == ("rubric",)  # the old recipes: just the primary judge
    assert EvaluationConfig(reference=str(FIXTURE)).reference == str(FIXTURE)
    with pytest.raises(RecipeError, match=r"no such file: /nope\.jsonl"):
        load_recipe("embedded", {"evaluation": {"reference": "/nope.jsonl"}})
    with pytest.raises(RecipeError, match=r"must start with evaluation\.judge"):
        load_recipe("embedded", {"evaluation": {"judges": ["pairrm", "rubric"]}})
    with pytest.raises(RecipeError, match=r"evaluation\.judges\.1"):
        load_recipe("embedded", {"evaluation": {"judges": ["rubric", "gpt5"]}})
    with pytest.raises(RecipeError, match="more than once"):
        load_recipe("embedded", {"evaluation": {"judges": ["rubric", "pairrm", "pairrm"]}})
