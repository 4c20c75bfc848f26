"""The dbt project on DuckDB (`dbt/`): staging views over the artifacts and the warehouse marts."""

import os
import subprocess
from pathlib import Path

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from resources import DBT_PROJECT_DIR, StorageResource, dbt_executable

DBT_PROJECT = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def ensure_manifest(project: DbtProject = DBT_PROJECT) -> Path:
    """`dbt parse` when the manifest is missing or older than the project files (headless runs and tests)."""
    project.prepare_if_dev()
    manifest = project.manifest_path
    sources = [
        project.project_dir / "dbt_project.yml",
        *(p for d in ("models", "macros", "tests") for p in Path(project.project_dir, d).rglob("*")),
    ]
    newest = max(p.stat().st_mtime for p in sources if p.is_file())
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        env = {
            **os.environ,
            "PREFSCALE_HOME": os.environ.get("PREFSCALE_HOME", str(Path(".prefscale").resolve())),
        }
        cmd = [
            dbt_executable(),
            "parse",
            "--project-dir",
            str(project.project_dir),
            "--profiles-dir",
            str(project.profiles_dir),
            "--quiet",
        ]
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return project.manifest_path


class _Translator(DagsterDbtTranslator):
    def get_asset_spec(self, manifest, unique_id, project):
        spec = super().get_asset_spec(manifest, unique_id, project)
        return spec.replace_attributes(group_name="warehouse")


@dbt_assets(manifest=ensure_manifest(), project=DBT_PROJECT, dagster_dbt_translator=_Translator())
def warehouse_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, storage: StorageResource):
    """Build and test the warehouse from the artifacts: staging views, then the marts (eval_leaderboard,
    eval_adherence, lf_summary, reward_distribution, pair_stats, lineage_audit) and every dbt test."""
    # dbt's profile and sources read PREFSCALE_HOME: the run's own storage root, whatever the process had before
    os.environ["PREFSCALE_HOME"] = str(storage.root)
    yield from dbt.cli(["build"], context=context).stream()
