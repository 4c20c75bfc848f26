"""The reward sources by name (the recipe's `reward.sources`, `evaluation.best_of_n_source`, `prefscale score
--reward`): one line each, `name: module:object`, the object a `prefscale.rewards.base.RewardSourceImpl`.
Every caller scores through this one table (`prefscale.rewards.base.score_rows`); this module imports nothing
else from prefscale, because the recipe schema (config) takes its accepted names from it."""

from __future__ import annotations

from prefscale.registry import Registry

REWARD_SOURCES: Registry = Registry(
    "reward source",
    {
        "label_model": "prefscale.rewards.label_model:LABEL_MODEL",
        "reward_model": "prefscale.rewards.reward_model:REWARD_MODEL",
        "pairrm": "prefscale.rewards.pairrm_source:PAIRRM",
    },
)

# The sources that can score an online policy's completions as it trains (methods grpo and rloo): each row on its
# own, from the prompt and the completion. PairRM compares every ordered pair of a group with a separate ranker
# (N·(N−1) passes per prompt at every step): it scores offline only.
ONLINE_SOURCES: tuple[str, ...] = ("label_model", "reward_model")
