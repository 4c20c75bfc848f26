"""The `self_judge` labeling function: the policy grades replies against the SMEs' criteria (self-rewarding)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.labeling.apply import apply_all_lfs_with_scores
from prefscale.labeling.context import LFContext
from prefscale.labeling.self_judge_kind import SCORE_TOKENS, SelfJudgeLF, expected_score
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW


def test_expected_score_renormalises_over_the_score_tokens():
    lp = np.log(np.array([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [0.2] * 5]) + 1e-300)
    assert expected_score(lp) == pytest.approx([1.0, 5.0, 3.0])
    assert np.isnan(expected_score(np.full((1, 5), np.nan)))[0]


def test_the_judge_is_shown_the_other_functions_descriptions_unless_given_criteria():
    r = load_recipe("embedded", {"labeling": {"model_functions": [{"name": "judge", "kind": "self_judge"}]}})
    (judge,) = [f for f in r.labeling.all_functions if f.kind == "self_judge"]
    assert "- Responses should name the company." in judge.criteria and judge.model == "policy"
    assert (
        judge.criteria.count("\n- ") == len(r.labeling.all_functions) - 2
    )  # every other function, one line each
    own = load_recipe(
        "embedded",
        {
            "labeling": {
                "model_functions": [{"name": "judge", "kind": "self_judge", "criteria": "- Be kind."}]
            }
        },
    )
    assert [f.criteria for f in own.labeling.all_functions if f.kind == "self_judge"] == ["- Be kind."]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"template": "Rate {response}"}, "must show the judge {criteria}"),
        ({"template": "{criteria} {response} {question}"}, "may only use"),
        ({"high_above": 2.0, "low_below": 3.0}, "must be below"),
        ({"high_above": None, "low_below": None}, "never votes"),
        ({"high_above": 6}, "less than or equal to 5"),
    ],
)
def test_bad_self_judge_settings_fail_at_recipe_load(extra, message):
    lf = {"name": "judge", "kind": "self_judge", **extra}
    with pytest.raises(RecipeError, match=message):
        load_recipe("embedded", {"labeling": {"model_functions": [lf]}})


def test_the_starting_policy_judges_its_own_replies_in_one_batched_pass(tiny_policy):
    base, _ = tiny_policy
    rows = pl.DataFrame(
        {
            "candidate_id": ["a", "b", "c"],
            "prompt": ["my router is slow"] * 3,
            "response": ["Thank you. 1. Restart it.", "No.", ""],
            "task_type": ["troubleshooting"] * 3,
        }
    )
    judge = SelfJudgeLF(name="judge", criteria="- Thank the customer.", high_above=3.0, low_below=2.9)
    app = apply_all_lfs_with_scores(rows, [judge], LFContext(policy=base))
    scores = app.scores["judge"].to_numpy()
    assert ((scores >= 1) & (scores <= 5)).all()
    expected = np.where(scores >= 3.0, HIGH, np.where(scores <= 2.9, LOW, ABSTAIN))
    assert app.votes["judge"].to_list() == expected.tolist()
    with pytest.raises(ValueError, match="starting policy"):
        apply_all_lfs_with_scores(rows, [judge], LFContext(base_policy=base))
    assert len(SCORE_TOKENS) == 5
