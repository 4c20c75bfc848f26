"""The recipe's `pairs` section: how one (chosen, rejected) pair per prompt is picked."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prefscale.config.base import _Strict
from prefscale.pairs.registry import PAIR_STRATEGIES


class PairsConfig(_Strict):
    """How `prefscale.pairs.select_pairs` picks one (chosen, rejected) pair per prompt; draws use `Recipe.seed`."""

    strategy: PAIR_STRATEGIES.literal() = Field(
        default="best_vs_worst",
        description="how the pair is picked from a prompt's ranked candidates: best_vs_worst (Snorkel, SPPO), "
        "min_margin, best_vs_random (RLHFlow max_random), random_pair (RLHFlow random), length_penalized "
        "(RLHFlow max_min_p), best_vs_worst_finished (the rejected reply a finished one whenever two finished "
        "ones differ by min_margin, so a pair contrasts content rather than being cut off) or length_matched "
        "(the widest-margin pair whose lengths are within max_length_ratio: compared within a length bucket)",
    )
    min_margin: float = Field(
        default=1e-6,
        ge=0,
        description="reward difference a pair needs: prompts whose chosen-rejected margin is smaller are "
        "dropped (1e-6: only ties)",
    )
    unfinished_is_worst: bool = Field(
        default=True,
        description="rank a sample cut at generation.max_new_tokens below every finished one, whatever its "
        "reward",
    )
    length_penalty: float = Field(
        default=0.0,
        ge=0,
        description="length_penalized only: rank by reward minus this times the response length in characters",
    )

    length_control: Literal["none", "regress", "anchored", "shorter_on_ties"] = Field(
        default="none",
        description="none: rank candidates by their reward; regress (any strategy): by the reward less its "
        "learned length trend, reward - slope·(log(1+chars) - mean), the least-squares slope of the reward on "
        "log(1+chars) fitted over the iteration's candidates (the finished ones when unfinished_is_worst), so the "
        "chosen reply is not picked for being longer. Only a positive slope is removed (a reward that prefers "
        "shorter replies is left as is); the slope is recorded in the pairs' manifest and metadata. anchored: "
        "the same slope, fitted once on the first iteration's candidates (the base policy's replies) and charged "
        "only for length beyond their mean log length, reward - slope·max(0, log(1+chars) - anchor): later "
        "iterations keep the base's slope and anchor, so a reply as long as the base's costs nothing (DPO on "
        "such pairs may still shrink replies below the base's: BENCHMARKS.md). shorter_on_ties: rank by the reward, "
        "and of candidates with the same reward (the same votes, for a label model) rank the shorter higher: the "
        "chosen reply is the shortest of the best, the rejected the longest of the worst, and no reward is "
        "traded for length (it combines with length_penalty; regress and anchored do not)",
    )

    length_control_strength: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="regress or anchored: the share of the fitted length slope removed, in (0, 1] (1: all of it; 0.5: "
        "half, so a reward that partly rewards detail keeps half of its length trend)",
    )

    max_length_ratio: float = Field(
        default=1.25,
        ge=1,
        description="length_matched only: the longer side of a pair at most this many times as long (in "
        "characters) as the shorter",
    )

    def selection_options(self) -> dict[str, Any]:
        """The `prefscale.pairs.selection.select_pairs` settings this section holds (all but the seed)."""
        return {
            "strategy": self.strategy,
            "min_margin": self.min_margin,
            "unfinished_is_worst": self.unfinished_is_worst,
            "length_penalty": self.length_penalty,
            "length_control": self.length_control,
            "length_control_strength": self.length_control_strength,
            "max_length_ratio": self.max_length_ratio,
        }

    @model_validator(mode="after")
    def _penalty_used(self) -> PairsConfig:
        if self.length_penalty and self.strategy != "length_penalized":
            raise ValueError(
                f"pairs.length_penalty is only used by strategy 'length_penalized', not {self.strategy!r}"
            )
        if self.length_penalty and self.length_control in ("regress", "anchored"):
            raise ValueError(
                f"pairs.length_control: {self.length_control} and pairs.length_penalty: {self.length_penalty} "
                "both correct for length: use one (length_penalty 0 with regress)"
            )
        if self.max_length_ratio != 1.25 and self.strategy != "length_matched":
            raise ValueError(
                f"pairs.max_length_ratio is only used by strategy 'length_matched', not {self.strategy!r}"
            )
        if self.length_control_strength != 1.0 and self.length_control in ("none", "shorter_on_ties"):
            raise ValueError(
                f"pairs.length_control_strength: {self.length_control_strength} is only used with "
                "pairs.length_control: regress or anchored"
            )
        return self
