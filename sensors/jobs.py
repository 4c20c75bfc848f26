"""Jobs: bootstrap (unpartitioned inputs), one alignment iteration (a partition), and the warehouse refresh."""

from __future__ import annotations

import os

import dagster as dg

from assets.partitions import ITERATIONS
from prefscale.config.recipe import iteration_assets, load_recipe

WAREHOUSE = dg.AssetSelection.groups("warehouse")


def iteration_run_assets() -> tuple[str, ...]:
    """What one iteration of `make run` materializes, for the recipe named by PREFSCALE_RECIPE (the one the graph
    is built for): `prefscale.artifacts.ITERATION_ASSETS`, best_of_n when the recipe enables it, then
    alpaca_eval_results (`prefscale.config.recipe.iteration_assets`)."""
    return iteration_assets(load_recipe(os.environ.get("PREFSCALE_RECIPE", "embedded")))


bootstrap_job = dg.define_asset_job(
    "bootstrap_job",
    selection=dg.AssetSelection.assets("base_policy", "eval_prompts", "eval_baseline"),
    description="Base policy, held-out prompts and the base's evaluation (iteration 0).",
)

# The weekly refresh's job: what `make run` does for one iteration (`prefscale recipe iteration-assets`), then
# the warehouse refresh `make run` ends with (`group:warehouse`: unpartitioned, it runs after the evaluation).
alignment_iteration_job = dg.define_asset_job(
    "alignment_iteration_job",
    selection=dg.AssetSelection.assets(*iteration_run_assets()) | WAREHOUSE,
    partitions_def=ITERATIONS,
    description="One alignment iteration, as `make run` runs it: prompts → candidates → LF votes → labels → "
    "rewards → pairs → DPO → eval (→ best-of-N when the recipe enables it) → AlpacaEval, then the warehouse.",
)

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=WAREHOUSE,
    description="dbt build of the warehouse marts from the current artifacts.",
)
