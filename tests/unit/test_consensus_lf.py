"""The `consensus` labeling function (self-consistency among a prompt's responses), the LF pack that uses it, and
the model-level holdout of `prefscale score --eval-alpaca-pairs --model-holdout`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from prefscale.cli import main
from prefscale.config.labeling import LabelingConfig, load_lf_pack
from prefscale.labeling.apply import apply_all_lfs_with_scores
from prefscale.labeling.consensus_kind import ConsensusLF, centrality
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW
from prefscale.rewards.text_scores import score_pairs, text_rows
from prefscale.tools.score_holdout import model_holdout, pack_variant

PAIRS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "alpacaeval" / "pairs"

PARIS = [
    "The capital of France is Paris, a city on the Seine known for the Louvre and the Eiffel Tower.",
    "Paris is the capital of France; it sits on the Seine and is home to the Eiffel Tower and the Louvre.",
    "France's capital city is Paris, on the river Seine, famous for the Eiffel Tower and the Louvre museum.",
]
DRIFT = (
    "Bananas are a yellow tropical fruit rich in potassium. They grow in large hanging bunches on tall plants, "
    "and smoothies, breads and desserts all use them, which makes bananas one of the most popular fruits."
)


def test_centrality_is_the_mean_similarity_to_the_others_centred_per_prompt():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    c = centrality(["a", "a", "a", "b", "b"], v)
    # a: the two identical vectors are each 1/2 from the others on average, the odd one 0
    assert c[:3] == pytest.approx([1 / 6, 1 / 6, -1 / 3])
    assert abs(c[:3].sum()) < 1e-12
    assert np.isnan(c[3:]).all()  # b has two responses: below min_responses


def test_consensus_votes_for_what_the_answers_agree_on_whatever_its_length():
    rows = text_rows(
        ["What is the capital of France?"] * 4 + ["Name a fruit."] * 2,
        [*PARIS, DRIFT, "Apple.", "A banana."],
    )
    lf = ConsensusLF(name="consensus", high_above=0.05, low_below=-0.05)
    app = apply_all_lfs_with_scores(rows, [lf])
    votes = app.votes["consensus"].to_list()
    assert votes[:3] == [HIGH, HIGH, HIGH] and votes[3] == LOW  # the longest answer drifted off the question
    assert votes[4:] == [ABSTAIN, ABSTAIN]  # two answers: nothing to agree with
    assert np.isnan(app.scores["consensus"].to_numpy()[4:]).all()
    assert lf.vote_label == "high|low"
    assert ConsensusLF(name="c", low_below=-0.1).vote_label == "low"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "give high_above, low_below or both"),
        ({"high_above": 0.0, "low_below": 0.1}, "must be below high_above"),
        ({"high_above": 0.1, "backend": "embedding"}, "needs a model"),
        ({"high_above": 0.1, "model": "x"}, "uses no model"),
        ({"high_above": 0.1, "min_responses": 2}, "greater than or equal to 3"),
    ],
)
def test_bad_consensus_declarations_are_named(fields, message):
    with pytest.raises(ValidationError, match=message):
        ConsensusLF(name="c", **fields)


def test_recipes_route_consensus_to_the_model_functions_and_packs_carry_it():
    cfg = LabelingConfig.model_validate(
        {"functions": [{"name": "agrees", "kind": "consensus", "high_above": 0.05}]}
    )
    assert cfg.functions == () and [lf.kind for lf in cfg.model_functions] == ["consensus"]
    from_pack = LabelingConfig.model_validate({"pack": "helpfulness"})
    assert "consensus" in [lf.name for lf in from_pack.model_functions]
    assert "consensus" not in [lf.name for lf in from_pack.functions]


def test_the_generic_reward_prefers_the_agreed_answer_to_a_longer_drifting_one():
    prompts = ["What is the capital of France? Explain briefly."] * 4
    responses = [*PARIS, DRIFT]
    with_consensus = score_pairs(prompts, responses)
    without = score_pairs(prompts, responses, pack=pack_variant(load_lf_pack(), "consensus", None))
    assert with_consensus[3] < min(with_consensus[:3])  # the drifting answer is last, though the longest
    assert without[3] == max(without)  # length alone (the tie-break) would have put it first


def test_pack_variant_sets_or_drops_the_thresholds():
    pack = load_lf_pack()
    tuned = {lf.name: lf for lf in pack_variant(pack, "consensus", 0.03).functions}["consensus"]
    assert (tuned.high_above, tuned.low_below) == (0.03, -0.03)
    assert "consensus" not in [lf.name for lf in pack_variant(pack, "consensus", None).functions]
    with pytest.raises(ValueError, match="has no labeling function 'nope'"):
        pack_variant(pack, "nope", 0.1)
    with pytest.raises(ValueError, match="high_above"):
        pack_variant(pack, "consensus", 1.5)  # a cosine threshold above 1


def test_model_holdout_scores_every_pair_once_on_held_out_models_only():
    r = model_holdout(PAIRS_DIR, grid=(None, 0.05))
    assert r["models"] == ["Qwen-14B-Chat", "alpaca-7b", "claude-2.1", "gemma-7b-it"]
    assert len(r["splits"]) == 6  # every pair of held-out models
    assert sum(s["held_out_pairs"] for s in r["splits"]) == r["held_out"]["pairs"] == 28
    assert {s["threshold"] for s in r["splits"]} <= {None, 0.05}
    for s in r["splits"]:
        assert len(set(s["held_out"])) == 2
    assert set(r["all_pairs_by_threshold"]) == {"None", "0.05"}


def test_model_holdout_needs_four_models(tmp_path, capsys):
    for name in ("alpaca-7b", "claude-2.1", "gemma-7b-it"):
        (tmp_path / f"{name}.jsonl").write_text((PAIRS_DIR / f"{name}.jsonl").read_text())
    with pytest.raises(ValueError, match="4 or more models"):
        model_holdout(tmp_path)
    assert main(["score", "--model-holdout"]) == 2
    assert "--model-holdout goes with --eval-alpaca-pairs" in capsys.readouterr().err
    assert main(["score", "--eval-alpaca-pairs", str(tmp_path), "--model-holdout"]) == 2
    assert "4 or more models" in capsys.readouterr().err


def test_cli_model_holdout(capsys):
    argv = ["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--model-holdout", "--holdout-grid", "none,0.05"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model-level holdout" in out and "28 held-out pairs" in out and "alpaca-7b vs claude-2.1" in out
    assert main([*argv[:-1], "none,abc"]) == 2
    assert "'abc' is not a number or 'none'" in capsys.readouterr().err
    assert main([*argv[:-1], "1.5"]) == 2
    assert "1.5 is not in (0, 1]" in capsys.readouterr().err
    assert main(["score", "--eval-alpaca-pairs", str(PAIRS_DIR), "--holdout-grid", "0.1"]) == 2
    assert "--holdout-grid and --holdout-optional go with --model-holdout" in capsys.readouterr().err
