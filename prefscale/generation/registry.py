"""The generation backends by name (the recipe's `generation.backend`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefscale.generation.base import GenerationBackend, Sampling
from prefscale.generation.transformers_backend import TransformersBackend

BACKENDS = ("transformers", "vllm", "endpoint")


def make_backend(
    config: Any, model_dir: str | Path, compute: Any = None, *, policy_iteration: int | None = None
) -> GenerationBackend:
    """The backend a recipe's `generation` section (`GenerationConfig`) names, for the policy in `model_dir`.

    `compute` (a `prefscale.compute.Compute`) is used by the in-process backends; `policy_iteration`
    (0: the base policy, k: dpo_checkpoint[k]) fills `{policy_iteration}` in an endpoint's model name.
    """
    sampling = Sampling(config.max_new_tokens, config.temperature, config.top_p, tuple(config.stop))
    if config.backend == "transformers":
        if compute is None:
            raise ValueError("the transformers backend needs a compute (device and dtype)")
        return TransformersBackend(model_dir, compute, sampling, config.batch_size)
    if config.backend == "vllm":
        from prefscale.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, sampling, compute=compute)
    if config.backend == "endpoint":
        from prefscale.generation.endpoint_backend import EndpointBackend

        return EndpointBackend(config.endpoint, sampling, iteration=policy_iteration)
    raise ValueError(f"unknown generation backend {config.backend!r}; known: {', '.join(BACKENDS)}")
