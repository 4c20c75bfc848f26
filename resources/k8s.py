"""Kubernetes: what a GPU step's pod asks for when the step runs in its own pod (dagster-k8s `k8s_job_executor`,
see docs/deployment.md and deploy/k8s/). The in-process executor of a local run ignores it."""

from __future__ import annotations

from typing import Any


def gpu_pod_config(gpus: int = 1) -> dict[str, Any]:
    """The `dagster-k8s/config` op tag of a step that trains on `gpus` GPUs (one process per GPU: set
    PREFSCALE_DPO_GPUS to the recipe's `dpo.num_processes`): 8 CPUs and 64 GiB per GPU, on a GPU node."""
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": str(8 * gpus), "memory": f"{64 * gpus}Gi", "nvidia.com/gpu": str(gpus)},
                "limits": {"nvidia.com/gpu": str(gpus)},
            }
        },
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
