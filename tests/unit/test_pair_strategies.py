"""Pair selection strategies (`pairs.strategy`) on hand-made frames, and their recipe settings."""

from __future__ import annotations

import typing

import polars as pl
import pytest

from prefscale.config.base import RecipeError
from prefscale.config.pairs import PairsConfig
from prefscale.config.recipe import load_recipe
from prefscale.pairs.selection import (
    BELOW_MIN_MARGIN,
    DROP_REASONS,
    IDENTICAL_BEST_AND_WORST,
    IDENTICAL_CANDIDATES,
    NO_ELIGIBLE_PAIR,
    PAIR_SCHEMA,
    PAIR_STRATEGIES,
    TIED_REWARDS,
    select_pairs,
)


def frame(rows):
    """rows: (prompt_id, sample_idx, response, reward, finish_reason) -> (candidates, rewards)."""
    cands = pl.DataFrame(
        {
            "candidate_id": [f"{p}-{k}" for p, k, *_ in rows],
            "prompt_id": [p for p, *_ in rows],
            "sample_idx": [k for _, k, *_ in rows],
            "prompt": [f"question {p}?" for p, *_ in rows],
            "response": [r[2] for r in rows],
            "finish_reason": [r[4] for r in rows],
        },
        schema_overrides={"sample_idx": pl.Int32},
    )
    return cands, pl.DataFrame({"candidate_id": cands["candidate_id"], "reward": [r[3] for r in rows]})


def chosen_rejected(sel):
    return {
        pid: (c, r) for pid, c, r in sel.pairs.select("prompt_id", "chosen_id", "rejected_id").iter_rows()
    }


@pytest.fixture
def ladder():
    """One prompt, four distinct finished candidates with rewards 0.1 < 0.5 < 0.7 < 0.9 (lengths 1..4)."""
    return frame(
        [
            ("p1", 0, "a", 0.1, "stop"),
            ("p1", 1, "bb", 0.5, "stop"),
            ("p1", 2, "ccc", 0.7, "stop"),
            ("p1", 3, "dddd", 0.9, "stop"),
        ]
    )


# --- deterministic strategies -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["best_vs_worst", "min_margin", "length_penalized"])
def test_best_and_worst_strategies(ladder, strategy):
    sel = select_pairs(*ladder, strategy=strategy)
    assert sel.pairs.schema == pl.Schema(PAIR_SCHEMA)
    assert chosen_rejected(sel) == {"p1": ("p1-3", "p1-0")}
    row = sel.pairs.row(0, named=True)
    assert row["margin"] == pytest.approx(0.8)
    assert row["length_diff"] == 3
    assert sel.dropped.height == 0


def test_default_is_best_vs_worst_and_ignores_the_seed(ladder):
    a = select_pairs(*ladder)
    assert a.pairs.equals(select_pairs(*ladder, strategy="best_vs_worst", seed=123).pairs)


def test_min_margin_names_the_threshold_where_best_vs_worst_says_tied():
    cands, rewards = frame(
        [
            ("p1", 0, "far low", 0.1, "stop"),
            ("p1", 1, "far high", 0.9, "stop"),
            ("p2", 0, "near low", 0.5, "stop"),
            ("p2", 1, "near high", 0.7, "stop"),
            ("p3", 0, "tie one", 0.4, "stop"),
            ("p3", 1, "tie two", 0.4, "stop"),
        ]
    )
    sel = select_pairs(cands, rewards, strategy="min_margin", min_margin=0.5)
    assert chosen_rejected(sel) == {"p1": ("p1-1", "p1-0")}
    assert sel.dropped.rows() == [("p2", BELOW_MIN_MARGIN), ("p3", TIED_REWARDS)]
    # same pairs under best_vs_worst, which has always called every drop by margin a tie
    bvw = select_pairs(cands, rewards, min_margin=0.5)
    assert bvw.pairs.equals(sel.pairs)
    assert bvw.dropped.rows() == [("p2", TIED_REWARDS), ("p3", TIED_REWARDS)]
    # min_margin=0 keeps even the exact tie (the first sample wins it)
    assert chosen_rejected(select_pairs(cands, rewards, strategy="min_margin", min_margin=0.0))["p3"] == (
        "p3-0",
        "p3-1",
    )


def test_length_penalty_flips_the_choice():
    cands, rewards = frame(
        [
            ("p1", 0, "Thanks, restart the router.", 0.6, "stop"),  # 27 characters
            ("p1", 1, "Restart the router. " * 10, 0.9, "stop"),  # 200 characters, the best raw reward
            ("p1", 2, "No idea, sorry about that!", 0.2, "stop"),  # 26 characters
        ]
    )
    assert chosen_rejected(select_pairs(cands, rewards, strategy="length_penalized")) == {
        "p1": ("p1-1", "p1-2")
    }
    sel = select_pairs(cands, rewards, strategy="length_penalized", length_penalty=0.01)
    # keys: 0.6 - 0.27 = 0.33, 0.9 - 2.0 = -1.1, 0.2 - 0.26 = -0.06
    assert chosen_rejected(sel) == {"p1": ("p1-0", "p1-1")}
    row = sel.pairs.row(0, named=True)
    assert (row["chosen_reward"], row["rejected_reward"]) == (0.6, 0.9)  # raw rewards, not the keys
    assert row["margin"] == pytest.approx(-0.3)
    assert row["length_diff"] == 27 - 200


def test_length_penalty_ties_and_unfinished():
    cands, rewards = frame(
        [
            ("p1", 0, "abcd", 0.5, "stop"),
            ("p1", 1, "ab", 0.3, "stop"),  # 0.5 - 0.1·4 = 0.3 - 0.1·2 = 0.1: tied after the penalty
            ("p2", 0, "short", 0.9, "length"),  # cut at the token limit: still last
            ("p2", 1, "a much longer finished answer", 0.2, "stop"),
        ]
    )
    sel = select_pairs(cands, rewards, strategy="length_penalized", length_penalty=0.1)
    assert sel.dropped.rows() == [("p1", TIED_REWARDS)]
    assert chosen_rejected(sel) == {"p2": ("p2-1", "p2-0")}
    assert sel.pairs["rejected_unfinished"].to_list() == [True]


# --- random strategies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random_pair", "best_vs_random"])
def test_random_strategies_are_deterministic_given_a_seed(ladder, strategy):
    cands, rewards = ladder
    a = select_pairs(cands, rewards, strategy=strategy, seed=7)
    assert a.pairs.equals(select_pairs(cands, rewards, strategy=strategy, seed=7).pairs)
    assert a.pairs.equals(select_pairs(cands.reverse(), rewards.reverse(), strategy=strategy, seed=7).pairs)
    # a prompt's draw does not depend on the other prompts
    more_c, more_r = frame([("p0", 0, "x", 0.1, "stop"), ("p0", 1, "y", 0.9, "stop")])
    both = select_pairs(pl.concat([more_c, cands]), pl.concat([more_r, rewards]), strategy=strategy, seed=7)
    assert both.pairs.filter(pl.col("prompt_id") == "p1").equals(a.pairs)


def test_random_pair_draws_every_pair_the_better_one_chosen(ladder):
    seen = set()
    for seed in range(60):
        (pair,) = chosen_rejected(select_pairs(*ladder, strategy="random_pair", seed=seed)).values()
        seen.add(pair)
    # all 6 unordered pairs, always oriented by reward (sample k has the k-th smallest reward)
    assert seen == {(f"p1-{hi}", f"p1-{lo}") for hi in range(4) for lo in range(hi)}


def test_best_vs_random_keeps_the_best_and_draws_the_rest(ladder):
    seen = set()
    for seed in range(40):
        (pair,) = chosen_rejected(select_pairs(*ladder, strategy="best_vs_random", seed=seed)).values()
        seen.add(pair)
    assert seen == {("p1-3", "p1-0"), ("p1-3", "p1-1"), ("p1-3", "p1-2")}


def test_random_strategies_skip_ineligible_pairs():
    cands, rewards = frame(
        [
            ("p1", 0, "dup", 0.9, "stop"),
            ("p1", 1, "other", 0.85, "stop"),  # within min_margin of the best
            ("p1", 2, "dup", 0.1, "stop"),  # same text as the best
            ("p1", 3, "fine", 0.3, "stop"),  # 0.2 above the last: not enough
            ("p2", 0, "cut", 0.99, "length"),
            ("p2", 1, "done", 0.2, "stop"),
        ]
    )
    for seed in range(20):
        best_vs_random = chosen_rejected(
            select_pairs(cands, rewards, strategy="best_vs_random", min_margin=0.25, seed=seed)
        )
        assert best_vs_random == {"p1": ("p1-0", "p1-3"), "p2": ("p2-1", "p2-0")}  # the only eligible ones
        sel = select_pairs(cands, rewards, strategy="random_pair", min_margin=0.25, seed=seed)
        pairs = chosen_rejected(sel)
        assert pairs["p1"] in {("p1-0", "p1-3"), ("p1-1", "p1-2"), ("p1-1", "p1-3")}
        assert pairs["p2"] == ("p2-1", "p2-0")  # the unfinished sample is never chosen
        assert (sel.pairs["chosen_reward"] - sel.pairs["rejected_reward"]).filter(
            sel.pairs["prompt_id"] == "p1"
        ).min() >= 0.25


# --- drops --------------------------------------------------------------------------------------------------


@pytest.fixture
def hard_cases():
    return frame(
        [
            ("p1", 0, "same", 0.2, "stop"),
            ("p1", 1, "same", 0.8, "stop"),
            ("p2", 0, "one", 0.6, "stop"),
            ("p2", 1, "two", 0.6, "stop"),
            ("p3", 0, "dup", 0.9, "stop"),
            ("p3", 1, "x", 0.5, "stop"),
            ("p3", 2, "dup", 0.1, "stop"),
            ("p4", 0, "good", 0.9, "stop"),
            ("p4", 1, "bad", 0.1, "stop"),
        ]
    )


@pytest.mark.parametrize(
    ("strategy", "min_margin", "p3"),
    [
        ("best_vs_worst", 1e-6, IDENTICAL_BEST_AND_WORST),
        ("min_margin", 0.45, IDENTICAL_BEST_AND_WORST),
        ("length_penalized", 1e-6, IDENTICAL_BEST_AND_WORST),
        ("random_pair", 0.45, NO_ELIGIBLE_PAIR),  # p3's only pair 0.45 apart repeats "dup"
        ("best_vs_random", 0.45, NO_ELIGIBLE_PAIR),
    ],
)
def test_drops_with_reasons(hard_cases, strategy, min_margin, p3):
    sel = select_pairs(*hard_cases, strategy=strategy, min_margin=min_margin, seed=3)
    assert sel.dropped.rows() == [("p1", IDENTICAL_CANDIDATES), ("p2", TIED_REWARDS), ("p3", p3)]
    assert chosen_rejected(sel) == {"p4": ("p4-0", "p4-1")}
    assert set(sel.dropped["reason"]) <= set(DROP_REASONS)


def test_random_pair_finds_a_pair_where_best_vs_worst_drops(hard_cases):
    sel = select_pairs(*hard_cases, strategy="random_pair", seed=0)
    assert chosen_rejected(sel)["p3"] in {("p3-0", "p3-1"), ("p3-1", "p3-2")}


# --- errors -------------------------------------------------------------------------------------------------


def test_unknown_strategy(ladder):
    with pytest.raises(ValueError, match=r"unknown pair strategy 'worst_vs_best'; known: best_vs_worst, "):
        select_pairs(*ladder, strategy="worst_vs_best")


def test_length_penalty_only_with_length_penalized(ladder):
    with pytest.raises(ValueError, match="only used by strategy 'length_penalized'"):
        select_pairs(*ladder, strategy="best_vs_worst", length_penalty=0.1)
    with pytest.raises(ValueError, match="length_penalty must be >= 0"):
        select_pairs(*ladder, strategy="length_penalized", length_penalty=-1.0)


# --- recipe -------------------------------------------------------------------------------------------------


def test_recipe_strategies_match_the_library():
    assert typing.get_args(PairsConfig.model_fields["strategy"].annotation) == PAIR_STRATEGIES.names
    assert PairsConfig().strategy == "best_vs_worst"
    assert PairsConfig().length_penalty == 0.0


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
def test_recipe_accepts_every_strategy(strategy):
    r = load_recipe("embedded", {"pairs": {"strategy": strategy}})
    assert r.pairs.strategy == strategy


def test_recipe_length_penalty():
    r = load_recipe("embedded", {"pairs": {"strategy": "length_penalized", "length_penalty": 0.002}})
    assert r.pairs.length_penalty == 0.002
    with pytest.raises(
        RecipeError, match=r"pairs\.length_penalty: Input should be greater than or equal to 0"
    ):
        load_recipe("embedded", {"pairs": {"strategy": "length_penalized", "length_penalty": -0.1}})
    with pytest.raises(RecipeError, match=r"length_penalty is only used by strategy 'length_penalized'"):
        load_recipe("embedded", {"pairs": {"strategy": "best_vs_worst", "length_penalty": 0.1}})


def test_recipe_rejects_unknown_strategy_and_keys():
    with pytest.raises(RecipeError, match=r"pairs\.strategy: Input should be 'best_vs_worst'"):
        load_recipe("embedded", {"pairs": {"strategy": "random"}})
    with pytest.raises(RecipeError, match=r"pairs\.seed: unknown key"):
        load_recipe("embedded", {"pairs": {"seed": 3}})


def test_best_vs_worst_finished_contrasts_finished_replies():
    """The rejected reply is the worst *finished* one when two finished ones differ; a prompt with one finished
    reply (or finished ones tied) falls back to best vs worst, which pairs it with a cut-off reply."""
    cands, rewards = frame(
        [
            ("p1", 0, "cut", 0.9, "length"),  # unfinished: ranked last by unfinished_is_worst
            ("p1", 1, "good", 0.8, "stop"),
            ("p1", 2, "meh", 0.3, "stop"),
            ("p2", 0, "cut a", 0.4, "length"),
            ("p2", 1, "only finished", 0.6, "stop"),
            ("p3", 0, "x", 0.5, "stop"),
            ("p3", 1, "y", 0.5, "stop"),
            ("p3", 2, "cut b", 0.2, "length"),
        ]
    )
    sel = select_pairs(cands, rewards, strategy="best_vs_worst_finished")
    assert chosen_rejected(sel) == {"p1": ("p1-1", "p1-2"), "p2": ("p2-1", "p2-0"), "p3": ("p3-0", "p3-2")}
    plain = select_pairs(cands, rewards, strategy="best_vs_worst")
    assert chosen_rejected(plain)["p1"] == ("p1-1", "p1-0")
