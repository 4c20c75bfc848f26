"""SIGKILL in the middle of each model-using step and of the dbt build, then a re-run (`faulted_home`).

Promised for every step: the killed run publishes nothing; the re-run succeeds and publishes exactly one version;
no temporary entry is left in the step's slot. `dpo_checkpoint` also resumes from the checkpoint the killed
trainer saved and keeps one MLflow run and one registered model version; the warehouse has no duplicate rows.
"""

from __future__ import annotations

import signal

import duckdb
import pytest
from mlflow.tracking import MlflowClient

from prefscale.storage import ArtifactStore
from tests.reliability.conftest import KILLED_STEPS


@pytest.mark.parametrize("asset", [s[0] for s in KILLED_STEPS])
def test_killed_step_then_rerun(faulted_home, asset):
    k = faulted_home.kills[asset]
    assert k.killed, f"{asset}: the run ended before it could be killed:\n{k.log[-3000:]}"
    assert k.returncode == -signal.SIGKILL
    assert k.rerun is not None and k.rerun.success, f"{asset}: the re-run failed"
    if asset != "warehouse":
        assert k.versions_after_kill == [], f"{asset}: the killed run published {k.versions_after_kill}"
        assert len(k.versions_after_rerun) == 1
        assert k.temps_after_rerun == [], f"{asset}: temporary entries left: {k.temps_after_rerun}"


def test_killed_training_resumed_with_one_mlflow_run_and_model_version(faulted_home):
    home = faulted_home.home
    rerun = faulted_home.kills["dpo_checkpoint"].rerun
    meta = {
        k: v.value for k, v in rerun.asset_materializations_for_node("dpo_checkpoint")[0].metadata.items()
    }
    assert meta["resumed_from_step"] >= 1
    assert meta["steps_run"] == meta["steps"] - meta["resumed_from_step"]
    store = ArtifactStore(home)
    assert store.verify(store.current("dpo_checkpoint", "1")) == []
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id])
        if r.info.run_name == "dpo_checkpoint-1"
    ]
    versions = [
        v for m in client.search_registered_models() for v in client.search_model_versions(f"name='{m.name}'")
    ]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(versions) == 1
    assert not (home / "work" / "dpo_checkpoint" / "1").exists()


def test_killed_dbt_build_leaves_a_warehouse_without_duplicates(faulted_home):
    with duckdb.connect(str(faulted_home.home / "warehouse.duckdb"), read_only=True) as con:
        total, distinct = con.execute(
            "select count(*), count(distinct (iteration, judge, generator, reference)) from eval_leaderboard"
        ).fetchone()
    assert total == distinct > 0
