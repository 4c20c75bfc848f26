"""`pairs.length_control: anchored`: the base's length slope, charged only for length beyond the base's mean."""

from __future__ import annotations

import math

import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.pairs.checks import non_positive_margins
from prefscale.pairs.length import LengthAnchor, describe_length_control, fit_length_anchor, length_slope
from prefscale.pairs.selection import base_length_anchor, select_pairs
from tests.unit.test_pair_length_control import length_driven
from tests.unit.test_pair_strategies import frame


def test_the_anchor_is_the_base_slope_and_mean_log_length():
    cands, rewards = length_driven()
    sel = select_pairs(cands, rewards, length_control="anchored")
    chars = cands["response"].str.len_chars().to_numpy()
    assert sel.length_anchor is not None
    assert sel.length_anchor.slope == pytest.approx(length_slope(chars, rewards["reward"].to_numpy()))
    assert sel.length_anchor.log_chars == pytest.approx(float(pl.Series(chars).log1p().mean()))
    assert sel.length_slope == sel.length_anchor.slope > 0.2
    # fitted from the base's frames alone, as later iterations read it
    assert base_length_anchor(cands, rewards) == sel.length_anchor


def pairs(sel) -> list[tuple[str, str]]:
    return sel.pairs.select("chosen_id", "rejected_id").rows()


def test_no_penalty_below_the_anchor():
    # reward rises 0.01 per candidate, 20..50 chars, all below an anchor of 1000 chars: anchored picks what the raw
    # reward picks, while regress, charging the whole range, changes the rejected side
    rows = [(f"p{p}", k, "y" * (20 + 10 * k), 0.9 + 0.01 * k, "stop") for p in range(4) for k in range(4)]
    cands, rewards = frame(rows)
    high = LengthAnchor(slope=0.5, log_chars=math.log1p(1000))
    off = select_pairs(cands, rewards)
    anchored = select_pairs(cands, rewards, length_control="anchored", length_anchor=high)
    regress = select_pairs(cands, rewards, length_control="regress")
    assert pairs(anchored) == pairs(off) == [(f"p{p}-3", f"p{p}-0") for p in range(4)]
    assert anchored.length_slope == 0.5 and anchored.length_anchor == high
    assert regress.length_slope > 0 and pairs(regress) != pairs(off)
    # equal rewards below the anchor stay tied: the prompts are dropped, not decided by length
    tied = frame([(f"p{p}", k, "y" * (20 + 10 * k), 0.9, "stop") for p in range(4) for k in range(4)])
    assert select_pairs(*tied, length_control="anchored", length_anchor=high).pairs.is_empty()


def test_length_beyond_the_anchor_is_charged_by_the_base_slope():
    # 100/200/400/800 chars, reward 0.5/0.6/0.7/0.8; anchor 150 chars, slope 0.2: keys 0.5/0.543/0.505/0.466
    rows = [(f"p{p}", k, "z" * (100 * 2**k), 0.5 + 0.1 * k, "stop") for p in range(3) for k in range(4)]
    cands, rewards = frame(rows)
    anchor = LengthAnchor(slope=0.2, log_chars=math.log1p(150))
    sel = select_pairs(cands, rewards, length_control="anchored", length_anchor=anchor)
    assert set(sel.pairs["chosen_id"].str.slice(-1)) == {"1"}
    assert set(sel.pairs["rejected_id"].str.slice(-1)) == {"3"}  # the best raw reward, by length alone
    assert (sel.pairs["margin"] < 0).all()
    assert non_positive_margins(
        sel.pairs, cands, length_slope=sel.length_slope, length_anchor=anchor.log_chars
    ).is_empty()
    half = select_pairs(
        cands, rewards, length_control="anchored", length_anchor=anchor, length_control_strength=0.5
    )
    assert half.length_slope == pytest.approx(0.1)
    assert set(half.pairs["chosen_id"].str.slice(-1)) == {"3"}  # 0.8 - 0.1·log(801/151) tops the rest


def test_the_margin_check_needs_the_anchor():
    # chosen 150 chars (0.5) over rejected 20 chars (0.4): both at or below the anchor, so nothing is charged
    rows = [
        (f"p{p}", k, "w" * n, r, "stop") for p in range(3) for k, (n, r) in enumerate([(20, 0.4), (150, 0.5)])
    ]
    cands, rewards = frame(rows)
    anchor = LengthAnchor(slope=0.2, log_chars=math.log1p(150))
    sel = select_pairs(cands, rewards, length_control="anchored", length_anchor=anchor)
    assert set(sel.pairs["chosen_id"].str.slice(-1)) == {"1"}
    assert non_positive_margins(
        sel.pairs, cands, length_slope=sel.length_slope, length_anchor=anchor.log_chars
    ).is_empty()
    # charged on the whole length difference (0.2·log(151/21) = 0.39 > 0.1), the same pairs would fail the check
    assert non_positive_margins(sel.pairs, cands, length_slope=sel.length_slope).height == 3


def test_input_checks():
    cands, rewards = length_driven(n_prompts=3)
    with pytest.raises(ValueError, match=r"length_anchor is only used with length_control 'anchored'"):
        select_pairs(cands, rewards, length_control="regress", length_anchor=LengthAnchor(0.1, 5.0))
    with pytest.raises(ValueError, match=r"3 lengths but 2 rewards"):
        fit_length_anchor([1, 2, 3], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"no candidate with a finite reward"):
        fit_length_anchor([10, 20], [float("nan"), float("nan")])
    with pytest.raises(ValueError, match=r"the base's candidates have no reward scores"):
        base_length_anchor(cands, rewards.with_columns(pl.lit("other").alias("candidate_id")))
    assert fit_length_anchor([10, 20, 30], [0.3, 0.2, 0.1]).slope == 0.0  # only a positive slope is charged


def test_describe_and_recipe():
    anchor = LengthAnchor(slope=0.3, log_chars=math.log1p(160))
    assert describe_length_control("anchored", 0.3, anchor) == (
        "length slope removed: 0.3000 per log-char beyond 160 chars (the base's geometric mean)"
    )
    r = load_recipe("embedded", {"pairs": {"length_control": "anchored", "length_control_strength": 0.5}})
    assert r.pairs.selection_options()["length_control"] == "anchored"
    with pytest.raises(
        RecipeError, match=r"Input should be 'none', 'regress', 'anchored' or 'shorter_on_ties'"
    ):
        load_recipe("embedded", {"pairs": {"length_control": "hinge"}})


def test_shorter_on_ties_breaks_only_ties_by_length():
    # per prompt: two best (0.9) of 60 and 30 chars, two worst (0.1) of 50 and 10 chars, one in between, longest
    spec = [(60, 0.9), (30, 0.9), (50, 0.1), (10, 0.1), (500, 0.5)]
    rows = [(f"p{p}", k, "v" * n, r, "stop") for p in range(3) for k, (n, r) in enumerate(spec)]
    cands, rewards = frame(rows)
    off = select_pairs(cands, rewards)
    on = select_pairs(cands, rewards, length_control="shorter_on_ties")
    assert set(off.pairs["chosen_id"].str.slice(-1)) == {"0"} and set(
        off.pairs["rejected_id"].str.slice(-1)
    ) == {"3"}
    assert set(on.pairs["chosen_id"].str.slice(-1)) == {"1"} and set(
        on.pairs["rejected_id"].str.slice(-1)
    ) == {"2"}
    assert on.pairs["margin"].to_list() == off.pairs["margin"].to_list()  # no reward traded for length
    assert on.length_slope == 0.0 and on.length_anchor is None
    assert describe_length_control("shorter_on_ties", 0.0) == "ties on the reward go to the shorter reply"
    with pytest.raises(RecipeError, match=r"length_control_strength: 0\.5 is only used with"):
        load_recipe(
            "embedded", {"pairs": {"length_control": "shorter_on_ties", "length_control_strength": 0.5}}
        )
