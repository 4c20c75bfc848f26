"""The pair strategies: given one prompt's candidates ranked best first, the (chosen, rejected) pair or a drop reason.

`select_pairs` drops prompts whose candidates are identical or tied before a strategy sees them; a strategy picks
from the rest. A new strategy is a function like these (in its own module, or here) and one line in
`prefscale.pairs.registry`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

IDENTICAL_CANDIDATES = "identical candidates"
TIED_REWARDS = "tied rewards"
BELOW_MIN_MARGIN = "margin below min_margin"
IDENTICAL_BEST_AND_WORST = "identical best and worst"
NO_ELIGIBLE_PAIR = "no distinct pair above min_margin"

Row = dict[
    str, Any
]  # a candidate with `_key` (what it is ranked by), `response`, `sample_idx`, `candidate_id`


@dataclass(frozen=True)
class Draw:
    """What a strategy may use besides the ranking: the prompt id and seed (random draws), `min_margin`, and
    `max_length_ratio` (`length_matched`)."""

    prompt_id: str
    seed: int
    min_margin: float
    max_length_ratio: float = 1.25  # length_matched: the longer side at most this many times the shorter

    def rng(self) -> random.Random:
        """Seeded per prompt: str seeds hash with sha512, stable across runs, processes and row orders."""
        return random.Random(f"{self.seed}:{self.prompt_id}")


class PickFn(Protocol):
    below_margin: str  # the drop reason when best and worst are closer than min_margin (but not tied)

    def __call__(self, ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str: ...


def strategy(below_margin: str = TIED_REWARDS) -> Callable[[Callable[..., Any]], PickFn]:
    """Mark a function as a pair strategy, with the reason it gives for a margin below `min_margin`."""

    def mark(fn: Callable[..., Any]) -> PickFn:
        fn.below_margin = below_margin  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]

    return mark


def eligible(chosen: Row, rejected: Row, min_margin: float) -> bool:
    """Whether (chosen, rejected) is a pair: keys at least `min_margin` apart and different responses."""
    return chosen["_key"] - rejected["_key"] >= min_margin and chosen["response"] != rejected["response"]


def extremes(ranked: list[Row]) -> tuple[Row, Row] | str:
    """Best vs worst of `ranked`, or the drop reason when their responses are the same."""
    best, worst = ranked[0], ranked[-1]
    return IDENTICAL_BEST_AND_WORST if best["response"] == worst["response"] else (best, worst)


@strategy()
def best_vs_worst(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """Highest key vs lowest key (Snorkel, SPPO)."""
    return extremes(ranked)


@strategy(below_margin=BELOW_MIN_MARGIN)
def min_margin(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """best_vs_worst, with a margin below `min_margin` reported as such rather than as a tie."""
    return extremes(ranked)


@strategy()
def length_penalized(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """best_vs_worst on `reward - λ·length` (RLHFlow `max_min_p`): `select_pairs` applies the penalty to the key."""
    return extremes(ranked)


def _in_order(ranked: list[Row]) -> list[Row]:
    return sorted(ranked, key=lambda r: r["sample_idx"])  # a canonical order for the draw


@strategy()
def best_vs_random(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """Highest key vs a random other candidate at least `min_margin` below it (RLHFlow `max_random`)."""
    best = ranked[0]
    rng = draw.rng()
    options = [(best, r) for r in _in_order(ranked) if r is not best and eligible(best, r, draw.min_margin)]
    return rng.choice(options) if options else NO_ELIGIBLE_PAIR


@strategy()
def random_pair(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """A random pair at least `min_margin` apart, the better-ranked one chosen (RLHFlow `random`)."""
    rng = draw.rng()
    position = {r["candidate_id"]: k for k, r in enumerate(ranked)}
    options = []
    for a, b in itertools.combinations(_in_order(ranked), 2):
        hi, lo = (a, b) if position[a["candidate_id"]] < position[b["candidate_id"]] else (b, a)
        if eligible(hi, lo, draw.min_margin):
            options.append((hi, lo))
    return rng.choice(options) if options else NO_ELIGIBLE_PAIR


@strategy()
def length_matched(ranked: list[Row], draw: Draw) -> tuple[Row, Row] | str:
    """The widest-margin pair whose lengths are within `max_length_ratio` of each other: the preference is
    compared within a length bucket, so the chosen side cannot win by being longer (nor lose by it)."""
    best: tuple[Row, Row] | None = None
    for i, hi in enumerate(ranked):
        for lo in ranked[i + 1 :]:
            short, long = sorted((hi["_len"], lo["_len"]))
            if long > draw.max_length_ratio * max(short, 1) or not eligible(hi, lo, draw.min_margin):
                continue
            if best is None or hi["_key"] - lo["_key"] > best[0]["_key"] - best[1]["_key"]:
                best = (hi, lo)
    return best if best is not None else NO_ELIGIBLE_PAIR
