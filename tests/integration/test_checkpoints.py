"""`dpo_checkpoint` over the shared pipeline run: verifiable folders, Pipes reporting, MLflow run + registry."""

import json
import os
import shutil
import signal
import threading
import time

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from assets.checkpoints import dpo_checkpoint
from prefscale.config.recipe import deep_merge
from prefscale.lineage.checkpoint_runs import NOT_REGISTERED
from prefscale.lineage.mlflow_runs import MLFLOW_DIGEST_CHARS
from prefscale.storage import ArtifactStore
from prefscale.training.dpo import last_complete_checkpoint
from resources import RecipeResource, StorageResource
from tests.integration.conftest import SMALL

pytestmark = pytest.mark.integration

STEP_METRICS = ("loss", "rewards_chosen", "rewards_rejected", "rewards_margins", "rewards_accuracies")


def _latest_metadata(pipeline, partition: str) -> dict:
    records = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("dpo_checkpoint"), asset_partitions=[partition]), limit=1
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_checkpoint_holds_merged_model_and_adapter_and_verifies(pipeline):
    store = ArtifactStore(pipeline.home)
    for i in ("1", "2", "3"):
        ref = store.current("dpo_checkpoint", i)
        assert (ref.path / "model.safetensors").is_file()
        assert (ref.path / "adapter" / "adapter_model.safetensors").is_file()
        assert (ref.path / "adapter" / "adapter_config.json").is_file()
        files = store.manifest(ref)["files"]
        assert "adapter/adapter_model.safetensors" in files and "model.safetensors" in files
        assert store.verify(ref) == []
        info = json.loads((ref.path / "prefscale_checkpoint.json").read_text())
        assert info["adapter"] == "adapter"
        # published atomically, trainer checkpoints cleaned up
        assert not [p for p in ref.path.parent.iterdir() if p.name.startswith(".tmp-")]
        assert not (pipeline.home / "work" / "dpo_checkpoint" / i).exists()


def test_checkpoint_model_card_names_its_lfs_pairs_and_settings(pipeline):
    """A checkpoint copied anywhere says where it came from: README.md, Hugging Face's model card format."""
    from huggingface_hub import ModelCard

    store = ArtifactStore(pipeline.home)
    for i in ("1", "3"):
        ref = store.current("dpo_checkpoint", i)
        card = ModelCard.load(ref.path / "README.md")
        assert {"prefscale", "dpo", f"iteration-{i}"} <= set(card.data.tags)
        pairs = store.resolve(
            "preference_pairs",
            i,
            next(x["version"] for x in store.manifest(ref)["inputs"] if x["asset"] == "preference_pairs"),
        )
        assert f"`preference_pairs[{i}]@{pairs.version}`" in card.text and pairs.digest in card.text
        functions = store.read_frame("lf_votes", i, "functions")
        for name, version in zip(functions["lf_name"], functions["version"], strict=True):
            assert f"| `{name}` | `{version}` |" in card.text
        assert "`base_policy[all]@" in card.text and "beta 0.1" in card.text
        assert store.verify(ref) == []  # the card is part of the hashed version


def test_training_ran_out_of_process_and_reported_through_pipes(pipeline):
    for i in ("1", "2", "3"):
        meta = _latest_metadata(pipeline, i)
        assert meta["pipes_reported"] is True
        assert meta["steps"] > 0 and meta["pipes_steps_reported"] == meta["steps"]  # one message per step
        assert meta["resumed_from_step"] == 0 and meta["steps_run"] == meta["steps"]
        assert meta["world_size"] == 1 and meta["adapter"] is True
        assert meta["mlflow_registered_model"] == "prefscale-embedded"


def test_mlflow_run_dataset_input_and_registered_model_version(pipeline):
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline.home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prefscale")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow's model-training view
    runs = {r.data.tags["dagster.partition"]: r for r in client.search_runs([exp.experiment_id])}
    store = ArtifactStore(pipeline.home)
    versions = client.search_model_versions("name = 'prefscale-embedded'")
    by_run = {v.run_id: v for v in versions}
    base = store.current("base_policy", "all")
    for i in ("1", "2", "3"):
        run = runs[i]
        pairs = store.current("preference_pairs", i)
        ckpt = store.current("dpo_checkpoint", i)
        meta = _latest_metadata(pipeline, i)
        assert meta["mlflow_run_id"] == run.info.run_id
        # all the settings as params, per-step metrics
        for key in ("dpo.loss_type", "dpo.beta", "dpo.lora.r", "dpo.max_length", "dpo.save_steps", "seed"):
            assert key in run.data.params, key
        for key in STEP_METRICS:
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == meta["steps"], key
        # the pairs as a dataset input with their digest
        (inp,) = run.inputs.dataset_inputs
        assert inp.dataset.digest == pairs.digest[:MLFLOW_DIGEST_CHARS]
        assert inp.dataset.name == f"preference_pairs[{i}]@{pairs.version}"
        tags = {t.key: t.value for t in inp.tags}
        assert tags["sha256"] == pairs.digest and tags["mlflow.data.context"] == "training"
        # one registered model version per run, linked back to Dagster and the upstream data versions
        mv = by_run[run.info.run_id]
        assert mv.source == str(ckpt.path)
        assert mv.tags["dagster.run_id"] == run.data.tags["dagster.run_id"]
        assert mv.tags["dagster.asset_key"] == "dpo_checkpoint"
        assert mv.tags["dagster.partition"] == i
        assert mv.tags["pairs.sha256"] == pairs.digest
        assert mv.tags["checkpoint.sha256"] == ckpt.digest
        assert mv.tags[f"upstream.preference_pairs.{i}"] == pairs.version
        start = ("base_policy", "all", base.version) if i == "1" else None
        if start is None:
            prev = store.current("dpo_checkpoint", str(int(i) - 1))
            start = ("dpo_checkpoint", prev.partition, prev.version)
        assert mv.tags[f"upstream.{start[0]}.{start[1]}"] == start[2]
        assert str(mv.version) == str(meta["mlflow_model_version"])


def _failure_text(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "the step should have failed"
    err, texts = failures[0].step_failure_data.error, []
    while err is not None:
        texts.append(err.message)
        err = err.cause
    return "\n".join(texts)


@pytest.mark.parametrize(
    ("dpo", "expected"),
    [
        ({"loss_type": "kto_pair"}, "dpo.loss_type"),
        ({"beta": 0}, "dpo.beta"),
        ({"max_length": 16}, "dpo.max_length=16 is not longer than the longest prompt"),
    ],
)
def test_invalid_settings_fail_before_training(pipeline, dpo, expected):
    store = ArtifactStore(pipeline.home)
    before = store.versions("dpo_checkpoint", "1")
    resources = {
        **pipeline.resources,
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(deep_merge(SMALL, {"dpo": dpo}))),
    }
    result = dg.materialize([dpo_checkpoint], partition_key="1", resources=resources, raise_on_error=False)
    assert not result.success
    assert expected in _failure_text(result)
    assert store.versions("dpo_checkpoint", "1") == before
    # `prefscale train-dpo` would have created (and locked) its work dir: it was never launched
    assert not (pipeline.home / "work" / "dpo_checkpoint" / "1").exists()


def _copied_home(pipeline, tmp_path, overrides: dict) -> tuple:
    """A copy of the pipeline's home and resources on it, with `overrides` on the small recipe."""
    home = tmp_path / "copy"
    shutil.copytree(pipeline.home, home, symlinks=True)
    return home, {
        "storage": StorageResource(home=str(home)),
        "recipe": RecipeResource(name="embedded", overrides_json=json.dumps(deep_merge(SMALL, overrides))),
        "compute": pipeline.resources["compute"],
        "mlflow": pipeline.resources["mlflow"],
        "pipes_subprocess_client": pipeline.resources["pipes_subprocess_client"],
    }


def _materialize_killing_after_first_checkpoint(
    resources: dict, work_root
) -> tuple[dict, dg.ExecuteInProcessResult]:
    """Materialize `dpo_checkpoint[1]`, SIGKILLing the training process it launched once a trainer checkpoint is
    complete; ({"step": the checkpoint's step}, or {} when none appeared; the failed result)."""
    killed: dict = {}

    def kill_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for work in work_root.glob("*") if work_root.is_dir() else []:
                ckpt = last_complete_checkpoint(work)
                if ckpt is not None:
                    pid = int((work / ".lock").read_text().split()[1])  # "pid <n>", written by the command
                    os.kill(pid, signal.SIGKILL)
                    killed["step"] = int(ckpt.name.split("-")[1])
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    result = dg.materialize([dpo_checkpoint], partition_key="1", resources=resources, raise_on_error=False)
    killer.join()
    return killed, result


def test_killed_training_resumes_when_the_asset_is_materialized_again(pipeline, tmp_path):
    """SIGKILL the `train-dpo` process the asset launched; the next materialization resumes from its checkpoint."""
    dpo = {"num_train_epochs": 2, "per_device_train_batch_size": 1, "save_steps": 2, "save_total_limit": 3}
    home, resources = _copied_home(pipeline, tmp_path, {"dpo": dpo})
    store = ArtifactStore(home)
    before = store.versions("dpo_checkpoint", "1")
    work_root = home / "work" / "dpo_checkpoint" / "1"
    killed, first = _materialize_killing_after_first_checkpoint(resources, work_root)
    assert killed, "no trainer checkpoint appeared"
    assert not first.success
    assert "materializing this partition again resumes from it" in _failure_text(first)
    assert store.versions("dpo_checkpoint", "1") == before  # nothing half-trained was published

    second = dg.materialize([dpo_checkpoint], partition_key="1", resources=resources)
    meta = {
        k: v.value for k, v in second.asset_materializations_for_node("dpo_checkpoint")[0].metadata.items()
    }
    assert meta["resumed_from_step"] >= killed["step"] > 0
    assert meta["steps_run"] == meta["steps"] - meta["resumed_from_step"] < meta["steps"]
    assert store.verify(store.current("dpo_checkpoint", "1")) == []
    assert not work_root.exists()  # removed after the publish


def test_grpo_checkpoint_trains_online_against_the_lfs_resumes_after_sigkill_and_keeps_its_lineage(
    pipeline, tmp_path
):
    """`training.method: grpo`: the same asset launches `prefscale train-online` through Pipes; a SIGKILLed run
    resumes; the checkpoint's inputs are the quality_labels (its label model), prompts and base policy."""
    online = {
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_steps": 4,
        "max_completion_length": 24,
        "save_steps": 1,
        "save_total_limit": 4,
    }
    home, resources = _copied_home(pipeline, tmp_path, {"training": {"method": "grpo"}, "online": online})
    store = ArtifactStore(home)
    before = store.versions("dpo_checkpoint", "1")
    work_root = home / "work" / "dpo_checkpoint" / "1"
    killed, first = _materialize_killing_after_first_checkpoint(resources, work_root)
    assert killed and not first.success
    assert store.versions("dpo_checkpoint", "1") == before

    assert "prefscale train-online failed" in _failure_text(first)

    # The tiny test policy may well collapse (its replies run into the 24-token limit): the blocking check then
    # fails the step after publishing, and what it reports must agree with the run's own last steps.
    second = dg.materialize([dpo_checkpoint], partition_key="1", resources=resources, raise_on_error=False)
    meta = {
        k: v.value for k, v in second.asset_materializations_for_node("dpo_checkpoint")[0].metadata.items()
    }
    assert meta["method"] == "grpo" and meta["steps"] == 4
    assert meta["resumed_from_step"] >= killed["step"] > 0
    assert meta["pipes_reported"] is True and meta["pipes_steps_reported"] == meta["steps_run"]
    assert 0.0 <= meta["final_reward"] <= 1.0 and "final_completions_repeated_line_share" in meta
    checks = {c.check_name: c for c in second.get_asset_check_evaluations()}
    assert checks["checkpoint_loads"].passed
    health = {k: v.value for k, v in checks["completions_healthy"].metadata.items()}
    collapsed = any(health[k] > 0.5 for k in ("empty_share", "repeated_line_share", "clipped_ratio"))
    assert checks["completions_healthy"].passed is (not collapsed) and second.success is (not collapsed)
    assert (meta["mlflow_model_version"] == NOT_REGISTERED) is collapsed

    ref = store.current("dpo_checkpoint", "1")
    inputs = {x["asset"] for x in store.manifest(ref)["inputs"]}
    assert {"quality_labels", "prompts", "base_policy"} <= inputs and "preference_pairs" not in inputs
    record = json.loads((ref.path / "prefscale_checkpoint.json").read_text())
    labels = store.current("quality_labels", "1")
    assert record["method"] == "grpo" and record["reward_labels_sha256"] == labels.digest
    assert record["online"]["num_generations"] == 4
    assert "grpo" in (ref.path / "README.md").read_text()
    assert store.verify(ref) == []
