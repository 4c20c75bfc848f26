"""`prefscale score`: the LF pack, row validation, byte-faithful output, the AlpacaEval pair measurement."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from prefscale.cli import main
from prefscale.config.labeling import load_lf_pack
from prefscale.labeling.task_types import DEFAULT_TASK_TYPE
from prefscale.rewards.text_scores import break_ties, label_model_scores, score_pairs
from prefscale.tools.score import (
    ScoreInputError,
    alpaca_answers_and_pairs,
    evaluate_alpaca_pairs,
    length_controlled,
    pair_agreement,
    read_rows,
    score_file,
    scored_line,
    split_of,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alpacaeval"
PAIRS_DIR = FIXTURES / "pairs"

ROWS = [
    '{"id": 1, "prompt": "List three ways to save energy at home.", "response": "1. Turn off lights.\\n2. Unplug '
    'chargers.\\n3. Use LED bulbs.", "meta": {"x": 1.50, "y": [1e3]}}',
    '{"prompt": "Why is the sky blue?", "response": "Could you clarify what you mean?", "z": null}',
    '{"response": "I am sorry, but I cannot help with that.", "prompt": "Write a poem about rain."}',
    '{"prompt": "Explain how vaccines work.", "response": "Vaccines train the immune system. They show it a harmless '
    "piece or copy of a germ, so that it makes antibodies and memory cells; when the real germ arrives later, the "
    'body recognises it and responds fast, before the infection can take hold.", "lang": "en"}',
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the LF pack ------------------------------------------------------------------------------------------------


def test_helpfulness_pack_loads_and_assigns_task_types():
    pack = load_lf_pack()
    assert pack.name == "helpfulness" and pack.tie_break == "length"
    names = [lf.name for lf in pack.functions]
    for expected in ("refuses", "asks_back", "list_format", "too_short", "rambling_for_short_task"):
        assert expected in names
    kinds = {lf.kind for lf in pack.functions}
    # nothing that needs a model: text patterns, and consensus and reference over TF-IDF
    assert kinds <= {
        "regex",
        "list_format",
        "ordered",
        "word_ratio",
        "length",
        "unfinished",
        "repetition",
        "instruction",
        "consensus",
        "reference",
    }
    assert all(lf.backend == "tfidf" for lf in pack.functions if lf.kind in ("consensus", "reference"))
    assert pack.task_type_of(
        [
            "Rewrite this sentence in the passive voice.",
            "Write a Python function that reverses a list.",
            "Calculate 12 * 7.",
            "Suggest five names for a cat.",
            "Write a haiku about autumn.",
            "Why do leaves change colour?",
            "Hello there",
        ]
    ) == ["short", "coding", "math", "list", "creative", "explain", DEFAULT_TASK_TYPE]
    assert load_lf_pack(Path("recipes/lf_packs/helpfulness.yaml").resolve()) == pack


def test_bad_lf_packs_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown LF pack 'nope'"):
        load_lf_pack("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nfunctions:\n  - name: x\n    kind: regex\n    pattern: 'a'\n    vote: maybe\n")
    with pytest.raises(ValueError, match=r"invalid LF pack .*bad.yaml:\n  - functions.0.regex.vote"):
        load_lf_pack(bad)
    bad.write_text(
        "name: bad\nfunctions:\n  - {name: x, kind: regex, pattern: a, vote: high, task_types: [poetry]}\n"
    )
    with pytest.raises(ValueError, match=r"names unknown task types \['poetry'\]"):
        load_lf_pack(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_lf_pack(bad)


def test_label_model_scores_prefer_answers_over_deflections():
    rows = [json.loads(line) for line in ROWS]
    res = label_model_scores([r["prompt"] for r in rows], [r["response"] for r in rows], load_lf_pack())
    assert res.votes.height == 4 and res.task_types[0] == "list"
    r = res.rewards
    assert r[0] > r[1] and r[0] > r[2] and r[3] > r[1] and r[3] > r[2]  # answers beat asking back / refusing
    assert np.all(np.isfinite(r))


def test_break_ties_orders_only_within_ties():
    scores = np.array([0.5, 0.5, 0.2, 0.5, 0.9, 0.2])
    key = np.array([10.0, 30.0, 5.0, 30.0, 1.0, 1.0])
    out = break_ties(scores, key)
    assert out[1] == out[3] > out[0] > out[2] > out[5]  # equal keys stay tied
    assert out[4] > out[1]  # distinct scores keep their order, whatever the key
    assert np.all(np.abs(out - scores) < 0.49 * 0.3 + 1e-12)
    assert np.array_equal(break_ties(np.array([0.3]), np.array([2.0])), np.array([0.3]))


# --- reading and writing ------------------------------------------------------------------------------------


def test_read_rows_lists_every_bad_line(tmp_path):
    path = _write(
        tmp_path / "in.jsonl",
        [
            '{"prompt": "a", "response": "b"}',
            '{"prompt": "a", "response": 3}',
            "not json",
            "",
            "[1, 2]",
            '{"prompt": null}',
            '{"prompt": "ok", "response": "fine"}',
        ],
    )
    with pytest.raises(ScoreInputError) as e:
        read_rows(path)
    assert e.value.problems == [
        (2, "'response' is int, not a string"),
        (3, "invalid JSON (Expecting value at column 1)"),
        (4, "empty line (every line must be a JSON object)"),
        (5, "expected a JSON object, got array"),
        (6, "'prompt' is null, not a string; missing 'response'"),
    ]
    assert "5 bad row(s); nothing was written" in str(e.value)


def test_read_rows_edge_cases(tmp_path):
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "response": "b"}\r\n{"prompt": "c", "response": "d"}')
    rows = read_rows(crlf)
    assert [r.line for r in rows] == [1, 2] and rows[0].text == '{"prompt": "a", "response": "b"}'
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"prompt": "a", "response": "b"}\n'))
    assert read_rows(gz)[0].record == {"prompt": "a", "response": "b"}
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ScoreInputError, match="no rows"):
        read_rows(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "\xe9"}\n')
    with pytest.raises(ScoreInputError, match="line 2: not valid UTF-8"):
        read_rows(tmp_path / "latin1.jsonl")
    with pytest.raises(ValueError, match=r"missing.jsonl: cannot read it \(No such file"):
        read_rows(tmp_path / "missing.jsonl")
    many = _write(tmp_path / "many.jsonl", ["x"] * 25)
    with pytest.raises(ScoreInputError, match=r"\.\.\. and 5 more"):
        read_rows(many)


def test_scored_line_keeps_the_row_byte_for_byte(tmp_path):
    rows = read_rows(_write(tmp_path / "in.jsonl", [ROWS[0], '{"prompt":"p","response":"r","reward":"old"}']))
    line = scored_line(rows[0], 0.25)
    assert line == ROWS[0][:-1] + ', "reward": 0.25}'  # 1.50 and 1e3 untouched
    assert list(json.loads(line)) == ["id", "prompt", "response", "meta", "reward"]
    replaced = json.loads(scored_line(rows[1], 0.5))
    assert list(replaced) == ["prompt", "response", "reward"] and replaced["reward"] == 0.5
    with pytest.raises(ValueError, match="non-finite"):
        scored_line(rows[0], float("nan"))


def test_score_file_end_to_end(tmp_path):
    src = _write(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "sub" / "out.jsonl"
    summary = score_file(src, out)
    assert summary["rows"] == 4 and summary["source"] == "label_model (LF pack helpfulness)"
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    for original, scored in zip(ROWS, lines, strict=True):
        rec = json.loads(scored)
        assert scored.startswith(original[:-1])
        assert {k: v for k, v in rec.items() if k != "reward"} == json.loads(original)
        assert isinstance(rec["reward"], float)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"]  # no temporary file left


def test_bad_input_writes_nothing(tmp_path):
    src = _write(tmp_path / "in.jsonl", [*ROWS, '{"prompt": "x"}'])
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    with pytest.raises(ScoreInputError, match="line 5: missing 'response'"):
        score_file(src, out)
    assert out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]


def test_other_sources(tmp_path):
    prompts = ["Fix my router", "Fix my router", "Fix my router", "Why is the sky blue?"]
    responses = ["Restart it.", "Unplug it, wait, plug it in.", "No.", "Rayleigh scattering."]
    tiny = score_pairs(prompts, responses, source="pairrm", model="tiny", seed=2)
    assert tiny[3] == 0.0 and np.all(np.isfinite(tiny))  # a prompt with one row: neutral
    assert abs(tiny[:3].sum()) < 1e-9  # PairRM scores of one prompt sum to zero (antisymmetric differences)
    with pytest.raises(ValueError, match="needs --model"):
        score_pairs(prompts, responses, source="reward_model")
    with pytest.raises(ValueError, match="unknown reward source"):
        score_pairs(prompts, responses, source="gpt4")


# --- AlpacaEval pairs ---------------------------------------------------------------------------------------


def test_pairs_follow_the_judge_preference(tmp_path):
    def ann(gen, rows):
        return "\n".join(
            json.dumps(
                {
                    "instruction": ins,
                    "output_1": "reference",
                    "generator_1": "ref",
                    "output_2": out,
                    "generator_2": gen,
                    "preference": pref,
                }
            )
            for ins, out, pref in rows
        )

    (tmp_path / "a.jsonl").write_text(ann("A", [("q1", "short", 1.9), ("q2", "a2", 1.2), ("q3", "a3", None)]))
    (tmp_path / "b.jsonl").write_text(
        ann("B", [("q1", "a much longer answer", 1.1), ("q2", "b2", 1.5), ("q3", "b3", 2.0)])
    )
    answers, pairs = alpaca_answers_and_pairs(sorted(tmp_path.iterdir()))
    assert answers.height == 6
    # q1: A (1.9) beat the reference more than B (1.1): A is the judge's winner; q2: gap 0.3 < 0.5; q3: null
    assert pairs.select("instruction", "winner", "loser").rows() == [("q1", "A", "B")]
    r = evaluate_alpaca_pairs(tmp_path)
    assert r["all"]["pairs"] == 1 and r["all"]["longer_wins"] == 0  # the shorter answer won
    assert split_of("q1") in ("dev", "holdout")
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_alpaca_pairs(tmp_path, min_gap=1.0)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no annotation files"):
        evaluate_alpaca_pairs(tmp_path / "nothing")


def test_eval_on_real_annotation_rows():
    r = evaluate_alpaca_pairs(PAIRS_DIR)
    assert r["answers"] == 32 and r["all"]["pairs"] == 28
    assert r["dev"]["pairs"] + r["holdout"]["pairs"] == 28
    a = r["all"]
    assert a["reward_wins"] + a["reward_ties"] <= 28 and 0 <= a["reward_accuracy"] <= 1
    assert a["longer_wins"] == 26  # counted by hand from the fixture's lengths and preferences
    assert a["reward_wins"] - a["longer_wins"] == a["only_reward_right"] - a["only_longer_right"]
    assert a["shorter_won_pairs"] == 28 - 26 - a["length_ties"]
    assert -1 <= r["length_correlation"] <= 1


def test_length_aware_agreement_tells_a_length_proxy_from_a_reward_that_sees_past_length():
    # four pairs: the judge preferred the longer answer twice and the shorter twice
    pairs = pl.DataFrame(
        {"len_win": [900, 800, 100, 200], "len_lose": [100, 200, 900, 800], "split": ["dev"] * 4}
    )
    proxy = pairs.with_columns(r_win=pl.col("len_win") / 1000, r_lose=pl.col("len_lose") / 1000)
    proxy = proxy.with_columns(lc_win=pl.lit(0.0), lc_lose=pl.lit(0.0))
    p = pair_agreement(proxy)
    assert p["reward_accuracy"] == 0.5 and p["shorter_won_pairs"] == 2
    assert p["reward_accuracy_shorter_won"] == 0.0 and p["reward_accuracy_longer_won"] == 1.0
    assert p["length_balanced_accuracy"] == 0.5 and p["lc_reward_accuracy"] == 0.0
    seer = pairs.with_columns(r_win=pl.lit(0.9), r_lose=pl.lit(0.1), lc_win=pl.lit(0.9), lc_lose=pl.lit(0.1))
    s = pair_agreement(seer)
    assert s["reward_accuracy_shorter_won"] == 1.0 and s["length_balanced_accuracy"] == 1.0
    assert s["lc_reward_accuracy"] == 1.0
    # a reward that is length plus a small real signal: length control leaves the signal
    scored = pl.DataFrame({"chars": [100, 1000, 100, 1000], "reward": [0.11, 0.9, 0.1, 0.91]})
    lc, slope = length_controlled(scored)
    assert slope > 0
    assert lc["reward_lc"][0] > lc["reward_lc"][2] and lc["reward_lc"][3] > lc["reward_lc"][1]


# --- the command --------------------------------------------------------------------------------------------


def test_cli_scores_and_reports(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    assert main(["score", "--input", str(src), "--output", str(out)]) == 0
    assert "scored 4 rows with label_model (LF pack helpfulness)" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 4


def test_cli_rejects_bad_rows_with_line_numbers(tmp_path, capsys):
    src = _write(tmp_path / "in.jsonl", [ROWS[0], "{oops", '{"prompt": 1, "response": "x"}'])
    out = tmp_path / "out.jsonl"
    assert main(["score", "--input", str(src), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "line 2: invalid JSON" in err and "line 3: 'prompt' is int, not a string" in err
    assert not out.exists()
    assert main(["score", "--input", str(src)]) == 2
    assert main(["score", "--input", str(src), "--output", str(out), "--lf-pack", "nope"]) == 2
    assert "unknown LF pack" in capsys.readouterr().err


def test_cli_eval_alpaca_pairs(tmp_path, capsys):
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR)]) == 0
    text = capsys.readouterr().out
    assert "reward_prefers_winner" in text and "longer_wins" in text and "holdout" in text
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--input", "x"]) == 2
    shutil.copy(PAIRS_DIR / "claude-2.1.jsonl", tmp_path / "only.jsonl")
    assert main(["score", "--eval-alpaca-pairs", str(tmp_path)]) == 2  # one model: no pairs


def test_cli_eval_reports_the_length_aware_columns(capsys):
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR)]) == 0
    out = capsys.readouterr().out
    assert "correlation with length" in out
    for column in ("shorter_won", "reward_on_shorter_won", "length_balanced", "length_controlled"):
        assert column in out
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["all"]["shorter_won_pairs"] == 28 - 26 - r["all"]["length_ties"]
    assert 0 <= r["all"]["length_balanced_accuracy"] <= 1
