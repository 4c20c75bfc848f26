"""The recipe's `reward` and `sft` sections: reward sources, their ensemble, the reward model, the curated SFT subset."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from prefscale.config.base import _Strict
from prefscale.rewards.registry import REWARD_SOURCES


class RewardModelSettings(_Strict):
    """The weak-supervision reward model (`prefscale.reward_model`, asset `reward_model`).

    A sequence-classification head (one logit) on a small Llama, trained on iteration 1's candidates against the
    label model's soft labels P(high) and reused by every later iteration (its inputs do not change with them).
    """

    init: Literal["policy", "scratch"] = Field(
        default="policy",
        description="policy: the base policy's weights and tokenizer under a new head; scratch: a random Llama "
        "of the size below with the base policy's tokenizer (for a large pretrained policy)",
    )
    hidden_size: int = Field(
        default=64, ge=16, description="scratch only: width of the random Llama (its MLP is twice this)"
    )
    num_layers: int = Field(default=2, ge=1, description="scratch only: decoder layers of the random Llama")
    num_heads: int = Field(default=2, ge=1, description="scratch only: attention heads of the random Llama")
    epochs: int = Field(
        default=2, ge=1, description="passes over iteration 1's candidates when training the reward model"
    )
    learning_rate: float = Field(
        default=1e-3, gt=0, description="AdamW learning rate of the reward model (weight decay 0.01)"
    )
    batch_size: int = Field(default=32, ge=1, description="(prompt, response) rows per training step")
    max_length: int = Field(
        default=256, ge=16, description="tokens of prompt + response kept (truncated on the left)"
    )


class RewardSource(_Strict):
    """One reward source and its weight in the ensemble."""

    source: REWARD_SOURCES.literal() = Field(
        description="label_model (P(high) of the Snorkel label model over the LF votes), reward_model (the "
        "weak-supervision reward model, `reward.reward_model`) or pairrm (llm-blender's PairRM ranker)",
    )
    weight: float = Field(
        default=1.0, gt=0, description="the source's weight in the ensemble's weighted mean (> 0)"
    )
    model: str | None = Field(
        default=None,
        description="pairrm only: hub id, ranker folder, or 'tiny' (a random tiny ranker: a code-path check); "
        "default 'tiny' for the embedded policy, else 'llm-blender/PairRM'",
    )

    @model_validator(mode="after")
    def _model_for_pairrm(self) -> RewardSource:
        if self.model is not None and self.source != "pairrm":
            raise ValueError(f"model is only used by source 'pairrm', not {self.source!r}")
        return self


class RewardConfig(_Strict):
    """Where rewards come from: one source, or several combined by a weighted ensemble (`prefscale.rewards`).

    `reward: {source: label_model}` (optionally with `model:`) is shorthand for a one-item `sources` list. One
    source: the reward is its raw score. Several: each score is normalised per prompt (`ensemble`: `zscore`,
    `rank` in [0, 1], or `none`) and the reward is the weighted mean.
    """

    sources: tuple[RewardSource, ...] = Field(
        default=(RewardSource(source="label_model"),),
        description="the reward sources, each named once; `reward: {source: ...}` is shorthand for one",
    )
    ensemble: Literal["zscore", "rank", "none"] = Field(
        default="zscore",
        description="several sources only: how each score is normalised per prompt before the weighted mean: "
        "zscore, rank (in [0, 1]) or none (raw scores)",
    )
    reward_model: RewardModelSettings = Field(
        default=RewardModelSettings(),
        description="the reward_model source's model (trained once, on iteration 1), also used by "
        "best_of_n_source reward_model",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("source") is None:  # null: not given (lets overrides switch)
            data = {k: v for k, v in data.items() if k != "source"}
        if isinstance(data, dict) and "source" in data:
            if "sources" in data:
                raise ValueError("give either reward.source (one source) or reward.sources, not both")
            data = dict(data)
            one = {"source": data.pop("source")}
            if "model" in data:
                one["model"] = data.pop("model")
            data["sources"] = [one]
        return data

    @model_validator(mode="after")
    def _unique(self) -> RewardConfig:
        if not self.sources:
            raise ValueError("reward.sources must list at least one source")
        names = [s.source for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"reward sources listed more than once: {dupes}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.source for s in self.sources)

    @property
    def source(self) -> str:
        """The one source's name, or `ensemble`."""
        return self.sources[0].source if len(self.sources) == 1 else "ensemble"


class SFTConfig(_Strict):
    """The reward-curated SFT subset (asset `curated_sft`): the top `top_quantile` of candidates by reward."""

    top_quantile: float = Field(
        default=0.25, gt=0, le=1, description="share of candidates kept, the highest rewards first (0, 1]"
    )
    scope: Literal["global", "per_prompt"] = Field(
        default="global",
        description="global: rank all of an iteration's candidates together; per_prompt: keep the top share of "
        "each prompt's",
    )
    drop_unfinished: bool = Field(
        default=True, description="never keep a sample cut at generation.max_new_tokens"
    )
