"""`pairs.length_control: regress`: the chosen reply is not picked for being longer, whatever the strategy."""

from __future__ import annotations

import math
import random
import typing

import pytest

from prefscale.config.base import RecipeError
from prefscale.config.pairs import PairsConfig
from prefscale.config.recipe import load_recipe
from prefscale.pairs.checks import non_positive_margins
from prefscale.pairs.length import LENGTH_CONTROLS, describe_length_control, length_slope
from prefscale.pairs.selection import BELOW_MIN_MARGIN, PAIR_STRATEGIES, select_pairs
from prefscale.pairs.strategies import NO_ELIGIBLE_PAIR
from tests.unit.test_pair_strategies import frame


def length_driven(n_prompts: int = 60, slope: float = 0.3, noise: float = 0.15, seed: int = 0):
    """Five finished candidates per prompt, lengths 20..400 chars; reward = slope·log(1+chars) + quality noise."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        for k in range(5):
            chars = rng.randint(20, 400)
            text = f"{p}.{k} " + "x" * chars
            rows.append((f"p{p:03d}", k, text, slope * math.log1p(len(text)) + rng.gauss(0, noise), "stop"))
    return frame(rows)


def test_the_slope_is_learned_and_the_chosen_side_is_less_often_longer():
    cands, rewards = length_driven()
    off = select_pairs(cands, rewards)
    on = select_pairs(cands, rewards, length_control="regress")
    assert off.length_slope == 0.0
    assert on.length_slope == pytest.approx(0.3, abs=0.06)  # learned from the candidates, not given
    assert on.pairs.height == off.pairs.height == 60
    assert abs(on.pairs["length_diff"].mean()) < 0.5 * off.pairs["length_diff"].mean()
    assert (on.pairs["length_diff"] > 0).mean() < (off.pairs["length_diff"] > 0).mean()
    # chosen/rejected/margin stay raw rewards; the blocking check ranks on the corrected key
    assert (on.pairs["margin"] <= 0).any()
    assert non_positive_margins(on.pairs, cands, length_slope=on.length_slope).height == 0
    assert non_positive_margins(on.pairs, cands).height > 0


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
def test_regress_combines_with_every_strategy(strategy):
    cands, rewards = length_driven(n_prompts=20)
    sel = select_pairs(cands, rewards, strategy=strategy, length_control="regress", seed=3)
    assert sel.length_slope > 0 and sel.pairs.height > 0
    assert non_positive_margins(
        sel.pairs, cands, unfinished_is_worst=True, length_slope=sel.length_slope
    ).is_empty()


def test_a_reward_that_does_not_depend_on_length_is_unchanged():
    # reward and log length have zero covariance over the candidates: nothing to remove
    flat = frame(
        [
            ("p1", 0, "short", 0.9, "stop"),
            ("p1", 1, "a much longer reply", 0.1, "stop"),
            ("p2", 0, "short", 0.1, "stop"),
            ("p2", 1, "a much longer reply", 0.9, "stop"),
        ]
    )
    # a reward that prefers shorter replies: its (negative) slope is left as is
    shorter = frame([("p1", k, "y" * (10 * (k + 1)), 1.0 - 0.2 * k, "stop") for k in range(4)])
    for cands, rewards in (flat, shorter):
        off = select_pairs(cands, rewards)
        on = select_pairs(cands, rewards, length_control="regress")
        assert on.length_slope == 0.0
        assert on.pairs.equals(off.pairs) and on.dropped.equals(off.dropped)
    assert length_slope([10, 20, 30, 40], [1.0, 0.8, 0.6, 0.4]) < 0


def ladders(bonus: float = 0.0):
    """Two prompts, replies of 5, 50 and 500 chars, reward 0.2·log(1+chars), plus `bonus` for the middle one."""
    return frame(
        [
            (p, k, "z" * n, 0.2 * math.log1p(n) + (bonus if k == 1 else 0.0), "stop")
            for p in ("p1", "p2")
            for k, n in enumerate((5, 50, 500))
        ]
    )


def test_min_margin_and_ties_are_judged_on_the_corrected_key():
    # a reward that is all length: once its slope is removed every candidate of a prompt ties
    cands, rewards = ladders()
    assert select_pairs(cands, rewards).pairs.height == 2
    on = select_pairs(cands, rewards, length_control="regress")
    assert on.length_slope == pytest.approx(0.2)
    assert on.pairs.height == 0 and set(on.dropped["reason"]) == {"tied rewards"}
    # a small content signal (0.03) survives; a min_margin above it drops the prompts, though the raw gap is 0.9
    cands, rewards = ladders(bonus=0.03)
    on = select_pairs(cands, rewards, strategy="min_margin", min_margin=0.01, length_control="regress")
    assert on.pairs["chosen_id"].to_list() == ["p1-1", "p2-1"]
    strict = select_pairs(cands, rewards, strategy="min_margin", min_margin=0.05, length_control="regress")
    assert strict.pairs.height == 0 and set(strict.dropped["reason"]) == {BELOW_MIN_MARGIN}
    assert select_pairs(cands, rewards, strategy="min_margin", min_margin=0.05).pairs.height == 2


def test_the_fit_leaves_out_unfinished_replies_when_they_rank_last():
    # finished replies: reward rises with length; the long cut-off ones score low and would flatten the fit
    rows = [("p1", k, "w" * n, 0.1 * math.log1p(n), "stop") for k, n in enumerate((10, 40, 160))]
    rows += [("p1", 3 + k, "c" * (900 + k), -1.0, "length") for k in range(3)]
    cands, rewards = frame(rows)
    assert select_pairs(cands, rewards, length_control="regress").length_slope == pytest.approx(0.1)
    everything = select_pairs(cands, rewards, unfinished_is_worst=False, length_control="regress")
    assert everything.length_slope == 0.0  # over all six the reward falls with length: nothing removed


def test_select_pairs_rejects_bad_settings():
    cands, rewards = length_driven(n_prompts=2)
    with pytest.raises(ValueError, match=r"unknown length_control 'log'; known: none, regress"):
        select_pairs(cands, rewards, length_control="log")
    with pytest.raises(ValueError, match=r"length_control='regress' and length_penalty=0.01: use one"):
        select_pairs(
            cands, rewards, strategy="length_penalized", length_penalty=0.01, length_control="regress"
        )


def test_describe_length_control():
    assert describe_length_control("none", 0.0) == "none"
    assert describe_length_control("regress", 0.01234) == "length slope removed: 0.0123 per log-char"
    assert describe_length_control("regress", 0.0).startswith("length slope removed: 0 ")


# --- recipe -------------------------------------------------------------------------------------------------


def test_recipe_length_control():
    assert typing.get_args(PairsConfig.model_fields["length_control"].annotation) == LENGTH_CONTROLS
    assert PairsConfig().length_control == "none"
    for strategy in ("best_vs_worst", "random_pair"):
        r = load_recipe("embedded", {"pairs": {"strategy": strategy, "length_control": "regress"}})
        assert r.pairs.length_control == "regress"


def test_recipe_rejects_regress_with_length_penalty_naming_both_keys():
    both = {"strategy": "length_penalized", "length_penalty": 0.002, "length_control": "regress"}
    with pytest.raises(
        RecipeError, match=r"pairs\.length_control: regress and pairs\.length_penalty: 0\.002"
    ):
        load_recipe("embedded", {"pairs": both})


def test_recipe_rejects_an_unknown_length_control():
    with pytest.raises(
        RecipeError,
        match=r"pairs\.length_control: Input should be 'none', 'regress', 'anchored' or 'shorter_on_ties'",
    ):
        load_recipe("embedded", {"pairs": {"length_control": "penalize"}})


def test_strength_removes_that_share_of_the_slope():
    cands, rewards = length_driven()
    full = select_pairs(cands, rewards, length_control="regress")
    half = select_pairs(cands, rewards, length_control="regress", length_control_strength=0.5)
    off = select_pairs(cands, rewards)
    assert half.length_slope == pytest.approx(0.5 * full.length_slope)
    mean_diff = [s.pairs["length_diff"].mean() for s in (off, half, full)]
    assert mean_diff[0] > mean_diff[1] > mean_diff[2]  # half the correction, in between
    assert non_positive_margins(half.pairs, cands, length_slope=half.length_slope).height == 0
    with pytest.raises(ValueError, match=r"length_control_strength must be in \(0, 1\], got 0"):
        select_pairs(cands, rewards, length_control="regress", length_control_strength=0)


def test_recipe_strength_needs_regress_and_reaches_select_pairs():
    r = load_recipe("embedded", {"pairs": {"length_control": "regress", "length_control_strength": 0.5}})
    assert r.pairs.selection_options()["length_control_strength"] == 0.5
    assert set(r.pairs.selection_options()) <= set(select_pairs.__code__.co_varnames)
    with pytest.raises(
        RecipeError,
        match=r"pairs\.length_control_strength: 0\.5 is only used with pairs\.length_control: regress or anchored",
    ):
        load_recipe("embedded", {"pairs": {"length_control_strength": 0.5}})
    with pytest.raises(RecipeError, match=r"pairs\.length_control_strength"):
        load_recipe("embedded", {"pairs": {"length_control": "regress", "length_control_strength": 1.5}})


def test_length_matched_compares_within_a_length_bucket():
    cands, rewards = length_driven()
    off = select_pairs(cands, rewards)
    matched = select_pairs(cands, rewards, strategy="length_matched", max_length_ratio=1.25)
    chosen, rejected = (
        matched.pairs[side].list.last().struct.field("content").str.len_chars()
        for side in ("chosen", "rejected")
    )
    a, b = chosen.to_numpy(), rejected.to_numpy()
    assert (a.clip(min=b) <= 1.25 * b.clip(max=a)).all()  # every pair within the bucket
    assert matched.pairs.height + matched.dropped.height == 60
    assert (matched.pairs["margin"] > 0).all()  # the better-rewarded of the two is chosen
    assert abs(matched.pairs["length_diff"].mean()) < 0.25 * off.pairs["length_diff"].mean()
    strict = select_pairs(cands, rewards, strategy="length_matched", max_length_ratio=1.0)
    assert set(strict.dropped["reason"]) == {NO_ELIGIBLE_PAIR}  # every candidate differs in length
    with pytest.raises(ValueError, match=r"max_length_ratio must be >= 1, got 0.5"):
        select_pairs(cands, rewards, strategy="length_matched", max_length_ratio=0.5)


def test_recipe_max_length_ratio_goes_with_length_matched():
    r = load_recipe("embedded", {"pairs": {"strategy": "length_matched", "max_length_ratio": 1.5}})
    assert r.pairs.selection_options()["max_length_ratio"] == 1.5
    with pytest.raises(
        RecipeError, match=r"pairs\.max_length_ratio is only used by strategy 'length_matched'"
    ):
        load_recipe("embedded", {"pairs": {"max_length_ratio": 1.5}})
