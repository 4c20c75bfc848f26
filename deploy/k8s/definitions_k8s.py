"""Dagster entry point on Kubernetes: the project's definitions, each step in its own pod (dagster-k8s).

Loaded by the user code deployment (deploy/k8s/values.yaml: `--python-file deploy/k8s/definitions_k8s.py`).
`k8s_job_executor` starts one Kubernetes Job per step and applies each step's op tag `dagster-k8s/config`:
`dpo_checkpoint` asks for `PREFSCALE_DPO_GPUS` GPUs there (assets/checkpoints.py); the other steps take the
defaults below. Needs `dagster-k8s` (installed by deploy/k8s/Dockerfile, not a dependency of prefscale).
"""

import os

import dagster as dg
from dagster_k8s import k8s_job_executor

from definitions import defs as local_defs

SHARED = {"persistentVolumeClaim": {"claimName": "prefscale-home"}, "name": "prefscale-home"}

executor = k8s_job_executor.configured(
    {
        "job_image": os.environ.get("PREFSCALE_IMAGE", "registry.example.com/prefscale:0.1.0"),
        "max_concurrent": 4,
        "env_vars": [
            "PREFSCALE_HOME",
            "PREFSCALE_RECIPE",
            "PREFSCALE_DPO_GPUS",
            "HF_HUB_OFFLINE=1",
            "MLFLOW_ENABLE_TELEMETRY=false",
        ],
        "volumes": [SHARED],
        "volume_mounts": [
            {"name": "prefscale-home", "mountPath": os.environ.get("PREFSCALE_HOME", "/data/prefscale")}
        ],
        "step_k8s_config": {
            "container_config": {"resources": {"requests": {"cpu": "2", "memory": "8Gi"}}},
        },
    }
)

defs = dg.Definitions(
    assets=list(local_defs.assets or []),
    asset_checks=list(local_defs.asset_checks or []),
    jobs=list(local_defs.jobs or []),
    schedules=list(local_defs.schedules or []),
    sensors=list(local_defs.sensors or []),
    resources=dict(local_defs.resources or {}),
    executor=executor,
)
