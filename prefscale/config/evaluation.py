"""The recipe's `evaluation` section: held-out evaluation, judges, best-of-N."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from prefscale.config.base import _Strict
from prefscale.evaluation.judges.registry import JUDGES, PRIMARY_JUDGES
from prefscale.rewards.registry import REWARD_SOURCES

EMBEDDED_JUDGE = "rubric"  # evaluation.judge when it is null and data.source is embedded
# The primary judges for prompts outside the embedded domain, as the recipe's error messages list them.
OTHER_PRIMARY_JUDGES = {
    "sme": "the SMEs' blind pairwise votes from the annotation tool",
    "local_llm": "a local LLM asked which response is better, with the team's written criteria in "
    "evaluation.judge_criteria",
    "alpaca_eval_gpt4_turbo": "the official AlpacaEval judge, GPT-4 Turbo; needs OPENAI_API_KEY",
    "pairrm": "llm-blender's PairRM ranker, when it is not a reward source",
}


def primary_judge_choices(exclude: tuple[str, ...] = ()) -> str:
    """The primary judges outside the embedded domain, one `name (what it is)` each, for error messages."""
    return "; ".join(f"{k} ({v})" for k, v in OTHER_PRIMARY_JUDGES.items() if k not in exclude)


class EvaluationConfig(_Strict):
    """Held-out evaluation (`eval_results`: the rubric judge) and the AlpacaEval-style results per judge.

    `judge` is the primary judge, which leads the leaderboard: one independent of the training reward. Null
    means `rubric` with the embedded data source and is an error with any other (the recipe resolves it:
    `Recipe._primary_judge`), as the rubric knows only the embedded Lumora domain. `judges` (default: just
    `judge`) are the judges `alpaca_eval_results` runs, `judge` first. `reference` is what each model is
    compared against: `heldout_base` (the base policy's samples on the held-out prompts), `alpaca_eval` (the
    805 AlpacaEval instructions with GPT-4 Turbo's outputs, from the Hugging Face Hub) or a path to a
    JSON/JSONL file of `instruction` + `output` rows (see `prefscale.eval_sets`).
    """

    samples_per_prompt: int = Field(
        default=5,
        ge=1,
        description="samples drawn per held-out prompt from the base policy (eval_baseline) and from each "
        "checkpoint (eval_results), with the generation section's sampling settings",
    )
    judge: Literal[PRIMARY_JUDGES] | None = Field(
        default=None,
        description="the primary judge: leads the leaderboard and comes first in `judges`; one independent of "
        "the training reward: rubric (the embedded Lumora domain's SME rubric: data.source embedded only), sme "
        "(the SMEs' pairwise votes), local_llm (with judge_criteria), alpaca_eval_gpt4_turbo or pairrm (not when "
        "it is a reward source); never weak_supervision (the training reward); null: rubric with data.source "
        "embedded, required with any other source (eval_results is always the rubric's)",
    )
    judges: tuple[JUDGES.literal(), ...] | None = Field(
        default=None,
        description="the judges alpaca_eval_results runs, `judge` first, each name once; null: just [judge]",
    )
    reference: str = Field(
        default="heldout_base",
        description="what each model is compared against: heldout_base (the base policy's held-out samples), "
        "alpaca_eval (the 805 AlpacaEval instructions with GPT-4 Turbo's outputs, from the Hub) or a path to a "
        "JSON/JSONL file of instruction + output rows",
    )
    annotator_config: str = Field(
        default="weighted_alpaca_eval_gpt4_turbo",
        description="alpaca_eval_gpt4_turbo judge: the alpaca_eval annotator config (a name shipped with "
        "alpaca_eval or a path); needs OPENAI_API_KEY",
    )
    pairrm_model: str = Field(
        default="tiny",
        description="pairrm judge: a llm-blender ranker folder or hub id (llm-blender/PairRM), or 'tiny' for a "
        "random offline ranker (exercises the code path, judges nothing)",
    )
    judge_criteria: str | None = Field(
        default=None,
        description="local_llm judge: the team's written criteria (free text), put in the judge's question "
        "before it asks which response is better; null: the question alone",
    )
    local_llm_model: str | None = Field(
        default=None,
        description="local_llm judge: a from_pretrained folder or hub id; null: the run's base policy",
    )
    judge_batch_size: int = Field(
        default=8, ge=1, description="rows per forward pass of the model-based judges (pairrm, local_llm)"
    )
    eval_set_size: int | None = Field(
        default=None,
        ge=1,
        description="alpaca_eval and file references: evaluate only the first N instructions; null: all",
    )
    best_of_n: int | None = Field(
        default=None,
        ge=0,
        description="asset best_of_n: N samples per held-out prompt from each checkpoint, the best kept by "
        "best_of_n_source; null or 0 disables",
    )
    best_of_n_source: REWARD_SOURCES.literal() = Field(
        default="label_model",
        description="what ranks the N best-of-N samples: label_model (the recipe's row LFs + a label model "
        "fitted on the N samples), reward_model (the weak-supervision reward model) or pairrm (llm-blender's "
        "PairRM, model best_of_n_model)",
    )
    best_of_n_model: str | None = Field(
        default=None,
        description="best_of_n_source pairrm only: a ranker folder, hub id or 'tiny'; null: as for the pairrm "
        "reward source",
    )

    @field_validator("judge", mode="before")
    @classmethod
    def _not_the_reward(cls, value: object) -> object:
        if value == "weak_supervision":
            raise ValueError(
                "weak_supervision cannot be evaluation.judge: it is the recipe's own labeling functions and label "
                "model, the training reward judging itself; list it after the primary judge in evaluation.judges"
            )
        return value

    @model_validator(mode="after")
    def _judges_and_reference(self) -> EvaluationConfig:
        if self.judges is not None:
            if not self.judges:
                raise ValueError("evaluation.judges must name at least one judge")
            dupes = sorted({j for j in self.judges if self.judges.count(j) > 1})
            if dupes:
                raise ValueError(f"evaluation.judges lists {dupes} more than once")
            if self.judge is not None and self.judges[0] != self.judge:
                raise ValueError(
                    f"evaluation.judges must start with evaluation.judge ({self.judge!r}), the primary judge"
                )
        if self.judge_criteria is not None:
            if not self.judge_criteria.strip():
                raise ValueError("evaluation.judge_criteria is empty: write the criteria, or leave it null")
            named = self.judges or ((self.judge,) if self.judge else ())
            if named and "local_llm" not in named:
                raise ValueError(
                    "evaluation.judge_criteria is only read by the local_llm judge, and evaluation.judge / "
                    f"evaluation.judges name {list(named)}"
                )
        if self.best_of_n == 1:
            raise ValueError("evaluation.best_of_n must be >= 2 (or null/0 to disable), got 1")
        if self.best_of_n_model is not None and self.best_of_n_source != "pairrm":
            raise ValueError(
                f"evaluation.best_of_n_model is only used by best_of_n_source 'pairrm', "
                f"not {self.best_of_n_source!r}"
            )
        ref = self.reference
        if ref not in ("heldout_base", "alpaca_eval") and not Path(ref).expanduser().is_file():
            raise ValueError(
                "evaluation.reference must be heldout_base, alpaca_eval or a path to a JSON/JSONL file "
                f"of instruction + output rows; no such file: {ref}"
            )
        return self

    @property
    def best_of_n_enabled(self) -> bool:
        """Whether the `best_of_n` asset has work to do (best_of_n >= 2)."""
        return bool(self.best_of_n)

    @property
    def all_judges(self) -> tuple[str, ...]:
        """The judges of `alpaca_eval_results`: `judges`, or just the primary `judge`. (In a recipe `judge` is
        always resolved; a bare `EvaluationConfig` without one falls back to the embedded default, `rubric`.)"""
        if self.judges is not None:
            return tuple(self.judges)
        return (self.judge or EMBEDDED_JUDGE,)
