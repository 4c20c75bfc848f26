"""The recipe's `pairs` section: how one (chosen, rejected) pair per prompt is picked."""

from __future__ import annotations

from pydantic import Field, model_validator

from prefscale.config.base import _Strict
from prefscale.pairs.registry import PAIR_STRATEGIES


class PairsConfig(_Strict):
    """How `prefscale.pairs.select_pairs` picks one (chosen, rejected) pair per prompt; draws use `Recipe.seed`."""

    strategy: PAIR_STRATEGIES.literal() = "best_vs_worst"
    min_margin: float = Field(
        default=1e-6, ge=0, description="drop prompts whose best-worst margin is smaller"
    )
    unfinished_is_worst: bool = Field(default=True, description="a sample cut at max_new_tokens ranks last")
    length_penalty: float = Field(
        default=0.0, ge=0, description="length_penalized: reward minus this times the length in characters"
    )

    @model_validator(mode="after")
    def _penalty_used(self) -> PairsConfig:
        if self.length_penalty and self.strategy != "length_penalized":
            raise ValueError(
                f"pairs.length_penalty is only used by strategy 'length_penalized', not {self.strategy!r}"
            )
        return self
