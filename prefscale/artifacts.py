"""The pipeline's artifacts by name: the assets of one iteration, in order."""

from __future__ import annotations

ITERATION_ASSETS: tuple[str, ...] = (
    "prompts",
    "candidates",
    "lf_votes",
    "quality_labels",
    "reward_scores",
    "preference_pairs",
    "dpo_checkpoint",
    "eval_results",
)
