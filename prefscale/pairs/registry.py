"""The pair strategies by name (the recipe's `pairs.strategy`): one line each, `name: module:function`."""

from __future__ import annotations

from prefscale.registry import Registry

PAIR_STRATEGIES: Registry = Registry(
    "pair strategy",
    {
        "best_vs_worst": "prefscale.pairs.strategies:best_vs_worst",
        "random_pair": "prefscale.pairs.strategies:random_pair",
        "best_vs_random": "prefscale.pairs.strategies:best_vs_random",
        "min_margin": "prefscale.pairs.strategies:min_margin",
        "length_penalized": "prefscale.pairs.strategies:length_penalized",
        "best_vs_worst_finished": "prefscale.pairs.finished:best_vs_worst_finished",
        "length_matched": "prefscale.pairs.strategies:length_matched",
    },
)
