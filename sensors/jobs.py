"""Jobs: bootstrap (unpartitioned inputs), one alignment iteration (a partition), and the warehouse refresh."""

from __future__ import annotations

import dagster as dg

from assets.best_of_n import best_of_n_if_enabled
from assets.partitions import ITERATIONS
from prefscale.artifacts import ITERATION_ASSETS

bootstrap_job = dg.define_asset_job(
    "bootstrap_job",
    selection=dg.AssetSelection.assets("base_policy", "eval_prompts", "eval_baseline"),
    description="Base policy, held-out prompts and the base's evaluation (iteration 0).",
)

alignment_iteration_job = dg.define_asset_job(
    "alignment_iteration_job",
    selection=dg.AssetSelection.assets(
        *ITERATION_ASSETS,
        *[k.path[-1] for k in best_of_n_if_enabled()],  # best_of_n when the recipe enables it
    ),
    partitions_def=ITERATIONS,
    description="One alignment iteration: prompts → candidates → LF votes → labels → rewards → pairs → DPO → eval.",
)

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.groups("warehouse"),
    description="dbt build of the warehouse marts from the current artifacts.",
)
