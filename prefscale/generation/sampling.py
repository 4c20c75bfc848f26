"""In-process sampling of a policy folder with a recipe's settings (evaluation, AlpacaEval-style results, ablation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from prefscale.generation.transformers_backend import sample_responses
from prefscale.policy.io import load_policy


def sample_policy(
    policy: str | Path,
    compute: Any,
    prompts: pl.DataFrame,
    n: int,
    settings: Any,
    seed: int,
    system: str | None = None,
    label: str = "sampling (transformers)",
) -> pl.DataFrame:
    """Load the policy folder and sample `n` responses per prompt with a recipe's `generation` settings, after
    the recipe's system message (`policy.system_prompt`); progress is logged under `label`."""

    model, tok = load_policy(policy, compute)
    return sample_responses(
        model,
        tok,
        prompts,
        n,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        batch_size=settings.batch_size,
        seed=seed,
        stop=settings.stop,
        system=system,
        label=label,
    )
