"""Dagster entry point: `dagster dev` / `dagster asset materialize -m definitions`."""

from __future__ import annotations

import dagster as dg

from assets import candidates, checkpoints, dbt, evaluation, labels, pairs, policy, prompts, rewards
from resources import default_resources
from sensors.jobs import alignment_iteration_job, bootstrap_job, warehouse_job

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [policy, prompts, candidates, labels, rewards, pairs, checkpoints, evaluation, dbt]
    ),
    asset_checks=dg.load_asset_checks_from_modules([prompts, candidates, rewards, pairs]),
    jobs=[bootstrap_job, alignment_iteration_job, warehouse_job],
    resources=default_resources(),
    executor=dg.in_process_executor,
)
