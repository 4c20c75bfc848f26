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
