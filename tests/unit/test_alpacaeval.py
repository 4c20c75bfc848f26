"""`prefscale alpacaeval`: AlpacaEval metrics from annotations files, checked on a 40-row real fixture."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may touch the network (set before huggingface_hub loads)

import gzip
import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from prefscale.cli import main
from prefscale.evaluation.alpaca_metrics import (
    REQUIRED_KEYS,
    AnnotationsError,
    compute_metrics,
    load_annotations,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "alpacaeval" / "claude-2.1.sample.jsonl"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text().splitlines()]


def write_jsonl(path: Path, recs: list) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in recs)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def independent(recs: list[dict]) -> dict:
    """The leaderboard metrics by plain counting, without pandas or alpaca_eval."""
    prefs = [r["preference"] for r in recs if r["preference"] is not None and not math.isnan(r["preference"])]
    shifted = [p - 1 for p in prefs]
    rounded = [0.5 if p == 1.5 else float(round(p) - 1) for p in prefs]
    return {
        "win_rate": 100 * sum(shifted) / len(shifted),
        "standard_error": 100 * statistics.stdev(shifted) / math.sqrt(len(shifted)),
        "n_wins": sum(p > 1.5 for p in prefs),
        "n_wins_base": sum(p < 1.5 for p in prefs),
        "n_draws": sum(p == 1.5 for p in prefs),
        "n_total": len(prefs),
        "discrete_win_rate": 100 * sum(rounded) / len(rounded),
        "avg_length": int(sum(len(r["output_2"]) for r in recs) / len(recs)),
    }


def assert_matches(metrics: dict, expected: dict) -> None:
    for key, want in expected.items():
        if isinstance(want, float):
            assert metrics[key] == pytest.approx(want, rel=0, abs=1e-12), key
        else:
            assert metrics[key] == want, key


# ------------------------------------------------------------------------------------------------ metrics


def test_fixture_metrics_match_independent_counts(records):
    metrics = compute_metrics(load_annotations(FIXTURE), length_controlled=False)
    assert_matches(metrics, independent(records))
    # the fixture's README states these counts; lines 39-40 are the two exact draws
    assert (metrics["n_wins"], metrics["n_wins_base"], metrics["n_draws"], metrics["n_total"]) == (
        4,
        34,
        2,
        40,
    )
    assert metrics["generator"] == "claude-2.1"
    assert metrics["baseline"] == "gpt4_1106_preview"
    assert metrics["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    assert metrics["n_unparsed"] == 0
    assert "length_controlled_winrate" not in metrics


def test_agrees_with_alpaca_eval_get_winrate(records):
    from alpaca_eval.metrics import get_winrate

    ours = compute_metrics(records, length_controlled=False)
    theirs = get_winrate(pd.DataFrame(records))
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert ours[key] == int(theirs[key])
    for key in ("win_rate", "standard_error", "discrete_win_rate"):
        assert ours[key] == pytest.approx(float(theirs[key]), rel=1e-13)


def test_null_and_nan_preferences_are_left_out_as_alpaca_eval_does(records, tmp_path):
    recs = [dict(r) for r in records]
    recs[0]["preference"] = None
    recs[5]["preference"] = float(
        "nan"
    )  # json.dumps writes the NaN literal, which alpaca_eval files may hold
    path = write_jsonl(tmp_path / "nulls.jsonl", recs)
    assert "NaN" in path.read_text()

    metrics = compute_metrics(load_annotations(path), length_controlled=False)
    assert_matches(metrics, independent(recs))
    assert metrics["n_total"] == 38
    assert metrics["n_unparsed"] == 2
    # avg_length covers every model output, parsed or not (alpaca_eval measures the model outputs)
    assert metrics["avg_length"] == int(sum(len(r["output_2"]) for r in recs) / 40)

    from alpaca_eval.metrics import get_winrate

    theirs = get_winrate(pd.DataFrame(recs))
    assert (metrics["n_total"], metrics["n_wins"], metrics["n_draws"]) == (
        theirs["n_total"],
        theirs["n_wins"],
        theirs["n_draws"],
    )
    assert metrics["win_rate"] == pytest.approx(float(theirs["win_rate"]), rel=1e-13)


def test_json_array_jsonl_and_gzip_give_identical_results(records, tmp_path):
    array_text = json.dumps(records, indent=2)
    (tmp_path / "a.json").write_text(array_text)
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(array_text.encode()))
    write_jsonl(tmp_path / "a.jsonl.gz", records)
    frames = [
        load_annotations(p)
        for p in (FIXTURE, tmp_path / "a.json", tmp_path / "a.json.gz", tmp_path / "a.jsonl.gz")
    ]
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frame, frames[0])
    results = [compute_metrics(f, length_controlled=False) for f in frames]
    assert all(r == results[0] for r in results)


def test_length_controlled_minimal_is_alpaca_eval_s_own_fit_without_the_hub(records, tmp_path, monkeypatch):
    import alpaca_eval.metrics.glm_winrate as glm

    def no_network(**kwargs):
        raise AssertionError(f"hf_hub_download called: {kwargs}")

    monkeypatch.setattr(glm, "hf_hub_download", no_network)
    frame = load_annotations(FIXTURE)
    ours = compute_metrics(frame)
    assert ours["lc_variant"] == "length_controlled_minimal"
    assert 0 < ours["length_controlled_winrate"] < 100

    # alpaca_eval's own function always downloads df_gamed.csv for the instruction difficulty, which the minimal
    # formula does not use: with a stand-in table it must give the very same number
    stub = tmp_path / "df_gamed.csv"
    pd.DataFrame({"model": "x", "index": range(len(frame)), "instruction_difficulty": 0.0}).to_csv(
        stub, index=False
    )
    monkeypatch.setattr(glm, "hf_hub_download", lambda **kwargs: str(stub))
    theirs = glm.get_length_controlled_winrate(
        frame.copy(),
        glm_name="length_controlled_minimal",
        save_weights_dir=None,
        is_warn_extreme_changes=False,
    )
    assert ours["length_controlled_winrate"] == theirs["length_controlled_winrate"]


def test_baseline_against_itself_is_a_draw_everywhere(records):
    recs = [
        {**r, "output_2": r["output_1"], "generator_2": r["generator_1"], "preference": 1.5} for r in records
    ]
    metrics = compute_metrics(recs)
    assert metrics["win_rate"] == 50.0
    assert (metrics["n_draws"], metrics["n_wins"], metrics["n_wins_base"]) == (40, 0, 0)
    assert metrics["length_controlled_winrate"] == 50.0


def test_length_controlled_unavailable_on_too_few_rows(records):
    metrics = compute_metrics(records[:3])
    assert metrics["length_controlled_winrate"] is None
    assert "at least 5" in metrics["lc_unavailable"]
    assert_matches(metrics, independent(records[:3]))


# ------------------------------------------------------------------------------------------- malformed files


def _broken(records: list[dict], line: int, change) -> list:
    recs = [dict(r) for r in records[:6]]
    recs[line - 1] = change(recs[line - 1])
    return recs


def _without(key):
    return lambda r: {k: v for k, v in r.items() if k != key}


MALFORMED = [
    *[(f"missing_{k}", 3, _without(k), f"missing key {k}") for k in REQUIRED_KEYS],
    ("above_2", 4, lambda r: {**r, "preference": 2.5}, "preference 2.5 is outside [1, 2]"),
    ("below_1", 2, lambda r: {**r, "preference": 0.5}, "preference 0.5 is outside [1, 2]"),
    ("legacy_zero", 2, lambda r: {**r, "preference": 0}, "preference 0 is outside [1, 2]"),
    ("string_pref", 5, lambda r: {**r, "preference": "2"}, "preference must be a number in [1, 2] or null"),
    ("bool_pref", 5, lambda r: {**r, "preference": True}, "preference must be a number in [1, 2] or null"),
    ("null_output", 6, lambda r: {**r, "output_2": None}, "output_2 must be a string"),
    ("mixed_generators", 4, lambda r: {**r, "generator_2": "gemma-7b-it"}, "mixed generators"),
    ("not_an_object", 3, lambda r: [r["instruction"]], "expected a JSON object"),
]


@pytest.mark.parametrize(("name", "line", "change", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_malformed_jsonl_names_line_and_reason(records, tmp_path, name, line, change, reason, suffix):
    path = write_jsonl(tmp_path / f"{name}{suffix}", _broken(records, line, change))
    with pytest.raises(AnnotationsError) as info:
        load_annotations(path)
    assert (info.value.line, info.value.path) == (line, str(path))
    assert reason in str(info.value)
    assert f"line {line}" in str(info.value)


def test_invalid_json_line(records, tmp_path):
    lines = [json.dumps(r) for r in records[:5]]
    lines[3] = lines[3][:-20]  # cut inside line 4
    path = tmp_path / "cut.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationsError, match=r"line 4: invalid JSON"):
        load_annotations(path)


def test_the_first_problem_in_file_order_is_reported(records, tmp_path):
    path = tmp_path / "two_problems.jsonl"
    path.write_text(json.dumps(_without("output_1")(records[0])) + "\n{not json\n")
    with pytest.raises(AnnotationsError, match=r"line 1: missing key output_1"):
        load_annotations(path)


def test_json_array_errors_name_the_element_s_line(records, tmp_path):
    recs = [dict(r) for r in records[:4]]
    del recs[2]["preference"]
    text = json.dumps(recs, indent=2)
    path = tmp_path / "bad.json"
    path.write_text(text)
    element_line = text[: text.index(json.dumps(recs[2]["instruction"]))].count("\n")  # the '{' line above it
    with pytest.raises(AnnotationsError, match=rf"line {element_line}: missing key preference"):
        load_annotations(path)

    path.write_text(text.replace('"preference": ', '"preference" ', 1))  # invalid JSON inside element 1
    bad_line = text[: text.index('"preference": ')].count("\n") + 1
    with pytest.raises(AnnotationsError, match=rf"line {bad_line}: invalid JSON"):
        load_annotations(path)

    path.write_text(json.dumps(records[:4], indent=2).rstrip()[:-1])  # unclosed array
    with pytest.raises(AnnotationsError, match="not closed"):
        load_annotations(path)


@pytest.mark.parametrize(("content", "reason"), [("", "no annotations"), ("[]", "no annotations")])
def test_empty_files_are_rejected(tmp_path, content, reason):
    path = tmp_path / "empty.json"
    path.write_text(content)
    with pytest.raises(AnnotationsError, match=reason):
        load_annotations(path)


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_json_prints_one_object_on_the_last_line(records, capsys):
    assert main(["alpacaeval", "--annotations", str(FIXTURE), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    result = json.loads(out.strip().splitlines()[-1])
    assert_matches(result, independent(records))
    for key in ("win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total", "avg_length"):
        assert key in result
    assert isinstance(result["length_controlled_winrate"], float)
    assert result["file"] == str(FIXTURE)


def test_cli_table(capsys):
    assert main(["alpacaeval", "--annotations", str(FIXTURE), "--no-lc"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "claude-2.1 vs gpt4_1106_preview" in out
    assert any(line.split()[:2] == ["n_draws", "2"] for line in out.splitlines())
    assert "length_controlled" not in out


def test_cli_rejects_malformed_file_with_exit_2(records, tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", _broken(records, 2, lambda r: {**r, "preference": 3}))
    assert main(["alpacaeval", "--annotations", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {path}: line 2: preference 3 is outside [1, 2]\n"


def test_cli_missing_file_exits_2(tmp_path, capsys):
    path = tmp_path / "nope.jsonl"
    assert main(["alpacaeval", "--annotations", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: {path}: no such file\n"
