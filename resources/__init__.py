"""Dagster resources: storage, recipe, compute/GPU, MLflow, warehouse, dbt and the annotation tool."""

from __future__ import annotations

import json
import os
import sys
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource

from prefscale.compute import Compute, resolve_compute
from prefscale.config.recipe import Recipe, load_recipe
from prefscale.lineage.mlflow_runs import DAGSTER_URL_ENV, dagster_run_tags, tracking_uri_for
from prefscale.storage import ArtifactStore, default_home
from prefscale.warehouse import connect_read_only
from resources.label_studio import LabelStudioResource

DBT_PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt"


class StorageResource(dg.ConfigurableResource):
    """Versioned Parquet / model-folder artifacts under PREFSCALE_HOME."""

    home: str = ""

    @property
    def root(self) -> Path:
        return Path(self.home).expanduser().resolve() if self.home else default_home()

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.root)


class RecipeResource(dg.ConfigurableResource):
    """The recipe every asset reads: a shipped name or a YAML path, plus optional JSON overrides."""

    name: str = "embedded"
    overrides_json: str = ""

    def load(self) -> Recipe:
        return _load_recipe(self.name, self.overrides_json)


@lru_cache(maxsize=8)
def _load_recipe(name: str, overrides_json: str) -> Recipe:
    overrides: dict[str, Any] = json.loads(overrides_json) if overrides_json else {}
    return load_recipe(name, overrides)


class ComputeResource(dg.ConfigurableResource):
    """Device choice for generation and training: `auto` = cuda if present, else the CPU; the dtype is bf16 on
    CUDA and on CPUs with fast bf16, fp32 elsewhere (`prefscale.compute.pick_dtype`)."""

    device: str = "auto"
    threads: int = 0

    def resolve(self, dtype: str | None = None) -> Compute:
        """The device and dtype: `dtype` is the recipe's `policy.dtype` (PREFSCALE_DTYPE overrides it)."""
        return resolve_compute(self.device, self.threads or None, dtype)


class MLflowResource(dg.ConfigurableResource):
    """MLflow tracking (sqlite under PREFSCALE_HOME unless a URI is given). `dagster_url`: the Dagster UI's base
    URL, for the note on each MLflow run linking back to its Dagster run (default: PREFSCALE_DAGSTER_URL, which
    `make ui` sets; without either, the runs carry the Dagster run id only)."""

    tracking_uri: str = ""
    experiment: str = "prefscale"
    dagster_url: str = ""

    def uri(self, home: Path) -> str:
        return self.tracking_uri or tracking_uri_for(home)

    def run_tags(self, context: dg.AssetExecutionContext, asset_key: dg.AssetKey) -> dict[str, str]:
        """The MLflow tags of a run made by this materialization: Dagster run id, asset, partition, links."""
        partition = context.partition_key if context.has_partition_key else None
        base = self.dagster_url or os.environ.get(DAGSTER_URL_ENV, "")
        return dagster_run_tags(context.run.run_id, asset_key.to_user_string(), partition, base)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse. dbt is its only writer; Python only reads, with short-lived connections."""

    path: str = ""

    @cached_property
    def _path(self) -> Path:
        return Path(self.path).expanduser().resolve() if self.path else default_home() / "warehouse.duckdb"

    def query(self, sql: str) -> Any:
        with connect_read_only(self._path) as con:
            return con.sql(sql).pl()


def dbt_executable() -> str:
    """The `dbt` installed beside this interpreter (the venv's), else whatever is on PATH."""
    local = Path(sys.executable).with_name("dbt")
    return str(local) if local.exists() else "dbt"


def default_resources(home: str | None = None, recipe: str | None = None, overrides_json: str = "") -> dict:
    """The resources for local runs: everything under one PREFSCALE_HOME."""
    root = Path(home).expanduser().resolve() if home else default_home()
    # dbt's profiles.yml and sources read PREFSCALE_HOME from the environment: keep it equal to the storage root.
    if home:
        os.environ["PREFSCALE_HOME"] = str(root)
    else:
        os.environ.setdefault("PREFSCALE_HOME", str(root))
    return {
        "storage": StorageResource(home=str(root)),
        "recipe": RecipeResource(
            name=recipe or os.environ.get("PREFSCALE_RECIPE", "embedded"), overrides_json=overrides_json
        ),
        "compute": ComputeResource(device=os.environ.get("PREFSCALE_DEVICE", "auto")),
        "mlflow": MLflowResource(),
        # launches `prefscale train-dpo` for dpo_checkpoint (Dagster Pipes: logs, step metrics, metadata)
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
        "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        "label_studio": LabelStudioResource(),
        "dbt": DbtCliResource(
            project_dir=str(DBT_PROJECT_DIR),
            profiles_dir=str(DBT_PROJECT_DIR),
            dbt_executable=dbt_executable(),
        ),
    }
