"""The pipeline's artifacts by name: the assets of one iteration, in order, and the asset checks' names."""

from __future__ import annotations

# Artifacts outside the iteration chain, and the iteration artifacts the core reads by name
BASE_POLICY = "base_policy"
SME_ANNOTATIONS = "sme_annotations"
PROMPTS = "prompts"
CANDIDATES = "candidates"
EVAL_PROMPTS = "eval_prompts"
EVAL_BASELINE = "eval_baseline"
EVAL_RESULTS = "eval_results"
DPO_CHECKPOINT = "dpo_checkpoint"
BEST_OF_N = "best_of_n"
ALPACA_EVAL_RESULTS = "alpaca_eval_results"

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

# Asset checks (the assets declare and report them by these names; the marts and tests read them)
DISJOINT_FROM_HELDOUT = "disjoint_from_heldout"  # prompts
NO_EMPTY_RESPONSES = "no_empty_responses"  # candidates
REWARDS_FINITE = "rewards_finite"  # reward_scores
CHOSEN_DIFFERS_FROM_REJECTED = "chosen_differs_from_rejected"  # preference_pairs
MARGINS_POSITIVE = "margins_positive"  # preference_pairs
PAIRS_REFERENCE_CANDIDATES = "pairs_reference_candidates"  # preference_pairs
CHECKPOINT_LOADS = "checkpoint_loads"  # dpo_checkpoint
COMPLETIONS_HEALTHY = "completions_healthy"  # dpo_checkpoint (online methods)
MESSAGES_WELL_FORMED = "messages_well_formed"  # curated_sft
