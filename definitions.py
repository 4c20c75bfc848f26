"""Dagster entry point: `dagster dev` / `dagster asset materialize -m definitions`."""

import dagster as dg

import assets
import sensors
from resources import default_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_package_module(assets),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
    jobs=sensors.JOBS,
    schedules=sensors.SCHEDULES,
    sensors=sensors.SENSORS,
    resources=default_resources(),
    executor=dg.in_process_executor,
)
