"""The generation backends by name (the recipe's `generation.backend`): one line each, `name: module:factory`.

A backend implements `prefscale.generation.base.GenerationBackend` and has a `from_config(BackendSpec)`
constructor; its module is imported only when a recipe uses it (vLLM is an optional extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefscale.generation.base import BackendSpec, GenerationBackend, Sampling
from prefscale.registry import Registry

BACKENDS: Registry = Registry(
    "generation backend",
    {
        "transformers": "prefscale.generation.transformers_backend:TransformersBackend.from_config",
        "vllm": "prefscale.generation.vllm_backend:VLLMBackend.from_config",
        "endpoint": "prefscale.generation.endpoint_backend:EndpointBackend.from_config",
    },
)


def make_backend(
    config: Any,
    model_dir: str | Path,
    compute: Any = None,
    *,
    policy_iteration: int | None = None,
    system: str | None = None,
) -> GenerationBackend:
    """The backend a recipe's `generation` section (`GenerationConfig`) names, for the policy in `model_dir`.

    `compute` (a `prefscale.compute.Compute`) is used by the in-process backends; `policy_iteration`
    (0: the base policy, k: dpo_checkpoint[k]) fills `{policy_iteration}` in an endpoint's model name; `system`
    is the recipe's `policy.system_prompt`.
    """
    factory = BACKENDS.get(config.backend)
    sampling = Sampling(config.max_new_tokens, config.temperature, config.top_p, tuple(config.stop), system)
    return factory(BackendSpec(config, model_dir, sampling, compute, policy_iteration))
