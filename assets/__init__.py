"""Thin Dagster assets, one module per artifact; the work happens in `prefscale`."""
