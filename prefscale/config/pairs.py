"""The recipe's `pairs` section: how one (chosen, rejected) pair per prompt is picked."""

from __future__ import annotations

from pydantic import Field, model_validator

from prefscale.config.base import _Strict
from prefscale.pairs.registry import PAIR_STRATEGIES


class PairsConfig(_Strict):
    """How `prefscale.pairs.select_pairs` picks one (chosen, rejected) pair per prompt; draws use `Recipe.seed`."""

    strategy: PAIR_STRATEGIES.literal() = Field(
        default="best_vs_worst",
        description="how the pair is picked from a prompt's ranked candidates: best_vs_worst (Snorkel, SPPO), "
        "min_margin, best_vs_random (RLHFlow max_random), random_pair (RLHFlow random), length_penalized "
        "(RLHFlow max_min_p) or best_vs_worst_finished (the rejected reply a finished one whenever two finished "
        "ones differ by min_margin, so a pair contrasts content rather than being cut off)",
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

    @model_validator(mode="after")
    def _penalty_used(self) -> PairsConfig:
        if self.length_penalty and self.strategy != "length_penalized":
            raise ValueError(
                f"pairs.length_penalty is only used by strategy 'length_penalized', not {self.strategy!r}"
            )
        return self
