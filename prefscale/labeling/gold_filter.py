"""What SME gold does to a labeling function it shows worse than chance (`label_model.gold_lf_filter`).

A function is worse than chance when its accuracy on the gold rows it voted on is below 0.5, on at least
`min_votes` such rows, and a one-sided binomial test rejects "accuracy ≥ 0.5" at `alpha` (so a few unlucky
votes do not condemn it). `off` only flags it; `disable` leaves it out of the label model's fit, as if it had
abstained everywhere, so it no longer moves the labels (nor, through the fitted parameters, online scoring).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from prefscale.labeling.analysis import gold_vote_counts

CHANCE = 0.5
ALPHA = 0.05
GOLD_LF_FILTERS = ("off", "disable")


@dataclass(frozen=True)
class GoldFinding:
    """An LF's record on gold that puts it below chance: its accuracy, the gold rows it voted on, the p-value."""

    accuracy: float
    n_voted: int
    p_value: float

    def describe(self) -> str:
        return f"gold accuracy {self.accuracy:.2f} on {self.n_voted} rows (p={self.p_value:.2g})"


@dataclass(frozen=True)
class GoldVerdict:
    """Gold's verdict on the LFs: what it did to each (`actions`, LF name → text) and which it disabled."""

    actions: dict[str, str]
    disabled: tuple[str, ...] = ()

    def kept(self, names: Sequence[str]) -> list[str]:
        """`names` without the disabled LFs: the label model's columns."""
        return [n for n in names if n not in self.disabled]

    def markdown(self) -> str:
        """A markdown list of the actions, one LF a line ("" when gold did nothing)."""
        return "\n".join(f"- `{name}`: {text}" for name, text in self.actions.items())


def worse_than_chance(
    votes: pl.DataFrame,
    names: Sequence[str],
    gold: pl.DataFrame | None,
    min_votes: int,
    alpha: float = ALPHA,
) -> dict[str, GoldFinding]:
    """The LFs (in `names` order) whose accuracy on the gold rows they voted on is below 0.5, on at least
    `min_votes` rows, with a one-sided binomial p-value (H0: accuracy ≥ 0.5) under `alpha`."""
    from scipy.stats import binomtest  # heavy import (scipy.stats), kept out of the definitions' load

    _, correct, incorrect = gold_vote_counts(votes, names, gold)
    found = {}
    for name, k, bad in zip(names, correct, incorrect, strict=True):
        n = k + bad
        if n < max(min_votes, 1) or k / n >= CHANCE:
            continue
        p = float(binomtest(k, n, CHANCE, alternative="less").pvalue)
        if p < alpha:
            found[name] = GoldFinding(k / n, n, p)
    return found


def gold_lf_filter(
    votes: pl.DataFrame,
    names: Sequence[str],
    gold: pl.DataFrame | None,
    mode: str = "off",
    min_votes: int = 10,
    alpha: float = ALPHA,
) -> GoldVerdict:
    """Gold's verdict on the LFs `names` of the label matrix `votes`: with `mode` `disable` each LF that
    `worse_than_chance` finds is disabled, with `off` it is only flagged. ValueError when every LF would be
    disabled (naming them), rather than fitting a label model on nothing."""
    if mode not in GOLD_LF_FILTERS:
        raise ValueError(f"unknown gold_lf_filter {mode!r}; known: {', '.join(GOLD_LF_FILTERS)}")
    found = worse_than_chance(votes, names, gold, min_votes, alpha)
    if mode == "off":
        actions = {n: f"flagged, kept (gold_lf_filter: off): {f.describe()}" for n, f in found.items()}
        return GoldVerdict(actions)
    if names and len(found) == len(names):
        detail = "; ".join(f"{n}: {f.describe()}" for n, f in found.items())
        raise ValueError(
            f"gold_lf_filter: disable would disable every labeling function ({detail}); nothing is left to fit "
            "the label model on: check the gold labels' polarity, or set label_model.gold_lf_filter: off"
        )
    return GoldVerdict({n: f"disabled: {f.describe()}" for n, f in found.items()}, tuple(found))
