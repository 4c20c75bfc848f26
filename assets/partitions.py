"""Iteration partitions 1..K, K taken from the recipe named by PREFSCALE_RECIPE (default: embedded)."""

import os

import dagster as dg

from prefscale.config.recipe import load_recipe


def iteration_count() -> int:
    return load_recipe(os.environ.get("PREFSCALE_RECIPE", "embedded")).iterations


ITERATIONS = dg.StaticPartitionsDefinition([str(i) for i in range(1, iteration_count() + 1)])


def iteration_of(context: dg.AssetExecutionContext, recipe_iterations: int) -> int:
    """The partition's iteration number, checked against the recipe in use."""
    i = int(context.partition_key)
    if not 1 <= i <= recipe_iterations:
        raise dg.Failure(f"partition {i} is outside the recipe's iterations 1..{recipe_iterations}")
    return i
