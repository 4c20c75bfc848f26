"""`label_model.gold_lf_filter`: an LF that SME gold shows worse than chance is flagged, or left out of the fit."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from prefscale.config.labeling import LabelModelConfig
from prefscale.config.recipe import RecipeError, load_recipe
from prefscale.labeling.analysis import CatalogEntry, lf_analysis
from prefscale.labeling.gold_filter import gold_lf_filter, worse_than_chance
from prefscale.labeling.label_model import fit_label_model
from prefscale.labeling.votes import ABSTAIN

GOOD = ["good_a", "good_b", "good_c"]
NAMES = [*GOOD, "contrarian"]
N, N_GOLD = 300, 60


@pytest.fixture(scope="module")
def matrix():
    """300 rows from a hidden label: three LFs of accuracy 0.8-0.85 voting on half the rows or more, and a
    `contrarian` of accuracy 0.15 voting on 90%; SME gold is the hidden label of the first 60 rows."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, N)
    cols = {}
    for name, acc, cov in zip(NAMES, [0.85, 0.8, 0.85, 0.15], [0.6, 0.6, 0.5, 0.9], strict=True):
        vote = np.where(rng.random(N) < acc, y, 1 - y)
        cols[name] = np.where(rng.random(N) < cov, vote, ABSTAIN).astype(np.int8)
    votes = pl.DataFrame({"candidate_id": [f"c{i:03d}" for i in range(N)], **cols})
    gold = pl.DataFrame({"candidate_id": votes["candidate_id"][:N_GOLD], "label": y[:N_GOLD].astype(np.int8)})
    return votes, gold, y


def test_disable_drops_the_contrarian_and_leaves_the_others(matrix):
    votes, gold, _ = matrix
    verdict = gold_lf_filter(votes, NAMES, gold, "disable", min_votes=10)
    assert verdict.disabled == ("contrarian",)
    assert list(verdict.actions) == ["contrarian"]  # the good ones: nothing
    assert verdict.kept(NAMES) == GOOD
    voted = int((votes["contrarian"][:N_GOLD] != ABSTAIN).sum())
    text = verdict.actions["contrarian"]
    assert re.fullmatch(rf"disabled: gold accuracy 0\.\d\d on {voted} rows \(p=[0-9.e-]+\)", text), text
    (finding,) = worse_than_chance(votes, NAMES, gold, 10).values()
    assert finding.accuracy < 0.5 and finding.p_value < 0.05 and finding.n_voted == voted
    assert "- `contrarian`: disabled: gold accuracy" in verdict.markdown()


def test_the_labels_change_without_the_contrarian(matrix):
    votes, gold, y = matrix
    verdict = gold_lf_filter(votes, NAMES, gold, "disable", min_votes=10)
    before = fit_label_model(votes, NAMES, seed=0)
    after = fit_label_model(votes, verdict.kept(NAMES), seed=0)
    changed = before.labels["label"].to_numpy() != after.labels["label"].to_numpy()
    assert changed.any()
    # only where the contrarian voted can dropping it change a label (rows no other LF voted on get the prior)
    others_voted = (votes.select(GOOD).to_numpy() != ABSTAIN).any(axis=1)
    assert (votes["contrarian"].to_numpy()[changed & others_voted] != ABSTAIN).all()
    assert np.mean(after.labels["label"].to_numpy() == y) > np.mean(before.labels["label"].to_numpy() == y)
    assert not after.labels["votes"].str.contains("contrarian").any()  # no longer behind any label
    assert "contrarian" not in set(after.params["lf_name"]) and "contrarian" not in after.weights


def test_off_only_flags_and_the_analysis_says_what_gold_did(matrix):
    votes, gold, _ = matrix
    verdict = gold_lf_filter(votes, NAMES, gold, "off", min_votes=10)
    assert verdict.disabled == () and verdict.kept(NAMES) == NAMES
    assert verdict.actions["contrarian"].startswith("flagged, kept (gold_lf_filter: off): gold accuracy 0.")
    disabled = gold_lf_filter(votes, NAMES, gold, "disable", min_votes=10)
    lfs = [CatalogEntry(n, "v1", "regex") for n in NAMES]
    analysis = lf_analysis(votes, lfs, gold, gold_actions=disabled.actions)
    action = dict(zip(analysis["lf_name"], analysis["gold_action"], strict=True))
    assert action == {**dict.fromkeys(GOOD), "contrarian": disabled.actions["contrarian"]}
    assert "gold_action" not in lf_analysis(votes, lfs, gold).columns  # lf_votes' table: no such column


def test_too_few_votes_or_no_significance_spare_a_function(matrix):
    votes, gold, _ = matrix
    voted = int((votes["contrarian"][:N_GOLD] != ABSTAIN).sum())
    assert gold_lf_filter(votes, NAMES, gold, "disable", min_votes=voted + 1).actions == {}
    # 1 of 4 right is below chance, but p = 5/16: not evidence enough
    few = pl.DataFrame({"candidate_id": ["a", "b", "c", "d"], "lf": [1, 1, 1, 0], "ok": [0, 0, 0, 0]})
    wrong = pl.DataFrame({"candidate_id": ["a", "b", "c", "d"], "label": [0, 0, 0, 0]})
    assert gold_lf_filter(few, ["lf", "ok"], wrong, "disable", min_votes=1).actions == {}
    assert gold_lf_filter(votes, NAMES, None, "disable").actions == {}  # no gold: nothing to judge by


def test_disabling_every_function_fails_naming_them(matrix):
    votes, gold, _ = matrix
    flipped = gold.with_columns(
        (1 - pl.col("label")).alias("label")
    )  # gold of the wrong polarity: everyone below chance
    contrary = votes.with_columns(pl.col("contrarian").replace({0: 1, 1: 0}))  # now contrarian agrees
    with pytest.raises(ValueError, match="would disable every labeling function") as e:
        gold_lf_filter(contrary, NAMES, flipped, "disable", min_votes=10)
    assert all(f"{n}: gold accuracy" in str(e.value) for n in NAMES)


def test_recipe_fields_default_off_and_reject_unknown_values():
    lm = LabelModelConfig()
    assert (lm.gold_lf_filter, lm.gold_min_votes) == ("off", 10)
    r = load_recipe(
        "embedded", {"labeling": {"label_model": {"gold_lf_filter": "disable", "gold_min_votes": 5}}}
    )
    assert (r.labeling.label_model.gold_lf_filter, r.labeling.label_model.gold_min_votes) == ("disable", 5)
    assert r.labeling.label_model.use_gold == "report"  # independent of use_gold
    with pytest.raises(RecipeError, match=r"labeling\.label_model\.gold_lf_filter: Input should be 'off' or"):
        load_recipe("embedded", {"labeling": {"label_model": {"gold_lf_filter": "reweight"}}})
    with pytest.raises(RecipeError, match=r"labeling\.label_model\.gold_min_votes"):
        load_recipe("embedded", {"labeling": {"label_model": {"gold_min_votes": 0}}})
