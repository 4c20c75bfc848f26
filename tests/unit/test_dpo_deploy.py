"""deploy/: the accelerate, Kubernetes and recipe files cannot run here, but they parse and agree with the code."""

from __future__ import annotations

import json
import py_compile
from pathlib import Path

import pytest
import yaml

from prefscale.commands.train import launcher
from prefscale.config.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ACCELERATE = {
    "ddp.yaml": "MULTI_GPU",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "fsdp.yaml": "FSDP",
}


def test_every_deploy_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= len(ACCELERATE) + 3
    for f in files:
        docs = list(yaml.safe_load_all(f.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), f


@pytest.mark.parametrize(("name", "kind"), sorted(ACCELERATE.items()))
def test_accelerate_configs_load_with_accelerate(name, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(DEPLOY / "accelerate" / name))
    assert cfg.distributed_type.value == kind
    assert (
        cfg.mixed_precision == "bf16" and cfg.num_machines == 1
    )  # the compute resource trains in bf16 on GPUs
    if name == "deepspeed_zero3.yaml":
        assert (
            cfg.deepspeed_config["zero_stage"] == 3 and cfg.deepspeed_config["zero3_save_16bit_model"] is True
        )
    if name == "deepspeed_zero2.yaml":
        assert cfg.deepspeed_config["zero_stage"] == 2
    if name == "fsdp.yaml":
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # rank 0 can save a whole model
    cmd = launcher(8, str(DEPLOY / "accelerate" / name))
    assert cmd[cmd.index("--config_file") + 1].endswith(name) and cmd[-2:] == ["-m", "prefscale.cli"]


def test_multi_gpu_recipe_validates_and_names_an_existing_config():
    r = load_recipe(str(DEPLOY / "recipes" / "mistral-7b-8gpu.yaml"))
    assert r.dpo.num_processes == 8 and r.dpo.gradient_checkpointing
    assert (ROOT / r.dpo.accelerate_config).is_file()
    assert r.dpo.max_length == 1024 and r.dpo.per_device_train_batch_size == 8


def test_kubernetes_files_agree():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    pvc = yaml.safe_load((DEPLOY / "k8s" / "pvc.yaml").read_text())
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    launcher_cfg = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert launcher_cfg["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "PREFSCALE_HOME=/data/prefscale" in launcher_cfg["envVars"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    entry = deployment["dagsterApiGrpcArgs"][deployment["dagsterApiGrpcArgs"].index("--python-file") + 1]
    assert (ROOT / entry.removeprefix("/opt/prefscale/")).is_file()
    assert values["additionalInstanceConfig"]["concurrency"]["pools"]["default_limit"] == 1
    py_compile.compile(
        str(DEPLOY / "k8s" / "definitions_k8s.py"), doraise=True
    )  # needs dagster-k8s to import


def test_dpo_checkpoint_requests_gpus_through_its_op_tag():
    from assets.checkpoints import dpo_checkpoint

    tags = dpo_checkpoint.op.tags
    k8s = json.loads(tags["dagster-k8s/config"])
    resources = k8s["container_config"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
