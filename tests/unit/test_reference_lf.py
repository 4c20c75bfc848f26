"""The `reference` labeling function (closeness to a known good answer), the LF pack's reference functions, and
how `prefscale score` feeds them: a row's `reference`, or an AlpacaEval annotation's `output_1`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from prefscale.cli import main
from prefscale.config.labeling import LabelingConfig
from prefscale.labeling.apply import apply_all_lfs_with_scores
from prefscale.labeling.reference_kind import ReferenceLF, reference_recall, reference_similarity
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW
from prefscale.rewards.text_scores import score_pairs, text_rows
from prefscale.tools.score import (
    ScoreInputError,
    alpaca_answers_and_pairs,
    evaluate_alpaca_pairs,
    read_rows,
    score_file,
)
from prefscale.tools.score_holdout import model_holdout

PAIRS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "alpacaeval" / "pairs"

PROMPT = "Why do leaves change colour in autumn?"
REFERENCE = (
    "Leaves change colour in autumn because trees stop making chlorophyll as days shorten. The green chlorophyll "
    "breaks down, revealing yellow and orange carotenoids, and some trees make red anthocyanins from trapped sugars."
)
ON_POINT = (
    "Shorter days make trees stop producing chlorophyll. As the green breaks down, the yellow and orange "
    "carotenoids show, and red anthocyanins form from sugars trapped in the leaf."
)
AROUND_IT = (
    "Autumn is a wonderful season full of colour and change. Many people enjoy walking in parks and forests at "
    "this time of year, taking photographs, collecting conkers and drinking warm drinks. Festivals celebrate the "
    "harvest, and gardeners prepare their beds for winter by mulching and planting bulbs. It is also a good time "
    "to think about how nature works in cycles, and to enjoy the crisp air and the long evenings with family."
)


def test_both_measures_put_the_short_answer_that_says_what_the_reference_says_first():
    responses = [ON_POINT, AROUND_IT, ON_POINT, ON_POINT]
    references = [REFERENCE, REFERENCE, None, "  "]
    cos = reference_similarity(responses, references)
    rec = reference_recall(responses, references)
    assert len(ON_POINT) < len(AROUND_IT)
    assert cos[0] > 0.3 > cos[1] >= 0 and rec[0] > 0.5 > 0.2 > rec[1]
    assert np.isnan(cos[2:]).all() and np.isnan(rec[2:]).all()  # no reference, or a blank one: no score
    assert reference_recall([REFERENCE], [REFERENCE])[0] == 1.0
    assert np.isnan(reference_recall(["anything"], ["and the of it"])[0])  # a reference of stop words only


def test_reference_votes_and_abstains_without_a_reference():
    rows = text_rows([PROMPT] * 3, [ON_POINT, AROUND_IT, ON_POINT], references=[REFERENCE, REFERENCE, None])
    lfs = [
        ReferenceLF(name="close", high_above=0.3, low_below=0.1),
        ReferenceLF(name="covers", measure="recall", high_above=0.5, low_below=0.2),
    ]
    app = apply_all_lfs_with_scores(rows, lfs)
    assert app.votes["close"].to_list() == [HIGH, LOW, ABSTAIN]
    assert app.votes["covers"].to_list() == [HIGH, LOW, ABSTAIN]
    # rows with no `reference` column at all: every row abstains (the pack stays usable on plain rows)
    plain = apply_all_lfs_with_scores(text_rows([PROMPT], [ON_POINT]), lfs)
    assert plain.votes.row(0)[1:] == (ABSTAIN, ABSTAIN)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give high_above, low_below or both"),
        ({"high_above": 0.1, "low_below": 0.2}, "must be below high_above"),
        (
            {"high_above": 0.1, "measure": "recall", "backend": "embedding", "model": "m"},
            "needs backend tfidf",
        ),
        ({"high_above": 0.1, "measure": "bleu"}, "'cosine' or 'recall'"),
        ({"high_above": 1.5}, "less than or equal to 1"),
    ],
)
def test_bad_reference_declarations_are_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        ReferenceLF(name="r", **fields)


def test_recipes_route_reference_to_the_model_functions_and_the_pack_carries_both_measures():
    cfg = LabelingConfig.model_validate(
        {"functions": [{"name": "gold", "kind": "reference", "high_above": 0.4}]}
    )
    assert cfg.functions == () and [lf.kind for lf in cfg.model_functions] == ["reference"]
    pack = LabelingConfig.model_validate({"pack": "helpfulness"})
    measures = sorted(lf.measure for lf in pack.model_functions if lf.kind == "reference")
    assert measures == ["cosine", "recall"]


def test_the_generic_reward_follows_the_reference_past_length_and_falls_back_to_length_without_one():
    prompts, responses = [PROMPT] * 2, [ON_POINT, AROUND_IT]
    with_reference = score_pairs(prompts, responses, references=[REFERENCE] * 2)
    without = score_pairs(prompts, responses)
    assert with_reference[0] > with_reference[1]  # the shorter answer that says what the reference says
    assert without[1] > without[0]  # no reference: length (the tie-break) decides
    with pytest.raises(ValueError, match="2 prompts but 1 references"):
        text_rows(prompts, responses, references=[REFERENCE])


def test_score_file_reads_a_reference_per_row_and_names_a_bad_one(tmp_path):
    rows = [
        {"prompt": PROMPT, "response": ON_POINT, "reference": REFERENCE},
        {"prompt": PROMPT, "response": AROUND_IT, "reference": REFERENCE},
        {"prompt": "Say hi.", "response": "Hi!", "reference": None},
    ]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = score_file(src, out)
    assert summary["with_reference"] == 2
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reference"] for r in scored] == [REFERENCE, REFERENCE, None]  # carried over untouched
    assert scored[0]["reward"] > scored[1]["reward"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response": "r", "reference": 3}) + "\n")
    with pytest.raises(ScoreInputError, match="line 1: 'reference' is int, not a string or null"):
        read_rows(bad)


def test_alpaca_pairs_use_each_annotations_output_1_as_the_reference_unless_told_not_to(capsys):
    answers, _ = alpaca_answers_and_pairs(sorted(PAIRS_DIR.iterdir()))
    first = json.loads((PAIRS_DIR / "claude-2.1.jsonl").read_text().splitlines()[0])
    row = answers.filter(answers["generator"] == "claude-2.1").row(0, named=True)
    assert (row["instruction"], row["reference"]) == (first["instruction"], first["output_1"])
    used = evaluate_alpaca_pairs(PAIRS_DIR)
    unused = evaluate_alpaca_pairs(PAIRS_DIR, references=False)
    assert used["references"] is True and unused["references"] is False
    assert used["all"]["pairs"] == unused["all"]["pairs"] == 28
    assert used["length_correlation"] != unused["length_correlation"]  # the reference functions voted
    held = model_holdout(PAIRS_DIR, grid=(None,), references=False)
    assert held["references"] is False and held["held_out"]["pairs"] == 28
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--no-references"]) == 0
    assert "no reference answers (--no-references" in capsys.readouterr().out
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR)]) == 0
    assert "reference answers: each annotation's output_1" in capsys.readouterr().out
    assert main(["score", "--input", "x.jsonl", "--output", "y.jsonl", "--no-references"]) == 2
    assert "--no-references goes with --eval-alpaca-pairs" in capsys.readouterr().err


def test_a_recipes_reference_function_reads_the_rows_references():
    from prefscale.config.recipe import load_recipe
    from prefscale.tools.score_recipe import recipe_scores

    recipe = load_recipe("embedded")
    close = ReferenceLF(name="close", high_above=0.3, low_below=0.1)
    labeling = recipe.labeling.model_copy(update={"model_functions": (close,)})
    recipe = recipe.model_copy(update={"labeling": labeling})
    prompts, responses = [PROMPT] * 3, [ON_POINT, AROUND_IT, ON_POINT]
    scores = recipe_scores(recipe, prompts, responses, references=[REFERENCE, REFERENCE, None])
    row = scores.analysis.filter(scores.analysis["lf_name"] == "close").row(0, named=True)
    assert row["kind"] == "reference" and row["coverage"] == pytest.approx(2 / 3)  # the third row abstains
    plain = recipe_scores(recipe, prompts, responses)
    assert plain.analysis.filter(plain.analysis["lf_name"] == "close")["coverage"][0] == 0


def test_model_holdout_can_also_choose_which_optional_functions_to_keep(capsys):
    optional = ["covers_the_reference", "close_to_the_reference"]
    r = model_holdout(PAIRS_DIR, grid=(None, 0.05), optional_lfs=optional)
    assert r["optional_lfs"] == optional and r["held_out"]["pairs"] == 28
    for s in r["splits"]:
        assert set(s["left_out"]) <= set(optional) and s["threshold"] in (None, 0.05)
    plain = model_holdout(PAIRS_DIR, grid=(None, 0.05))
    assert all(s["left_out"] == [] for s in plain["splits"])  # nothing optional: the whole pack
    assert r["all_pairs_by_threshold"] == plain["all_pairs_by_threshold"]  # the whole pack's, either way
    with pytest.raises(ValueError, match=r"optional functions \['nope'\] are not in LF pack 'helpfulness'"):
        model_holdout(PAIRS_DIR, grid=(None,), optional_lfs=["nope"])
    argv = ["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--model-holdout", "--holdout-grid", "none"]
    assert main([*argv, "--holdout-optional", ",".join(optional)]) == 0
    assert "left_out" in capsys.readouterr().out
    assert main([*argv, "--holdout-optional", "consensus"]) == 2  # the tuned function cannot be optional too
    assert "are not in LF pack 'helpfulness' (or are the tuned 'consensus')" in capsys.readouterr().err
