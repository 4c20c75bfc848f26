"""The `self_judge` labeling function: the policy grades each reply against the SMEs' stated criteria.

Self-Rewarding Language Models (Yuan et al. 2024) let the model being aligned judge its own candidates with an
LLM-as-a-judge prompt built from the criteria people care about. Here the judge is, by default, the policy the
iteration starts from (`model: policy`; the base policy in iteration 1), the criteria are the descriptions of the
recipe's other labeling functions unless `criteria` gives its own text, and the score is read from the model's
probabilities of the score tokens in one batched forward pass (no sampling, nothing to parse): the expected score
on a 1-5 scale. Like every function, it votes, and the label model weighs it against the others and reports its
accuracy (estimated, and on SME gold when there is some).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator, model_validator

from prefscale.labeling.lm_scores import _answer_logprobs, _as_user_message
from prefscale.labeling.model_kinds import ModelContext, _ModelLF, _threshold_label
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW

POLICY_ALIAS = "policy"  # a model reference that means the policy the iteration starts from
SCORE_TOKENS = (" 1", " 2", " 3", " 4", " 5")
DEFAULT_TEMPLATE = (
    "Review the reply to the user's message against these criteria:\n{criteria}\n\n"
    "User: {prompt}\nReply: {response}\n\n"
    "Score the reply from 1 (fails the criteria) to 5 (meets all of them). Score:"
)


class SelfJudgeLF(_ModelLF):
    """The policy as a judge of replies: the expected score, over the score tokens' probabilities, of the prompt
    `template` filled with the criteria, the user's message and the reply. At least `high_above` votes high, at
    most `low_below` votes low, in between abstains."""

    kind: Literal["self_judge"] = Field(
        default="self_judge",
        description="self_judge: the policy grades the reply 1-5 against the SMEs' criteria (self-rewarding)",
    )
    model: str = Field(
        default=POLICY_ALIAS,
        description="policy (the policy the iteration starts from: self-rewarding), base_policy, a "
        "from_pretrained folder or a hub id",
    )
    criteria: str = Field(
        default="",
        description="the criteria the judge is shown, one per line; empty: the descriptions of the recipe's "
        "other labeling functions",
    )
    template: str = Field(
        default=DEFAULT_TEMPLATE,
        description="the text put to the judge as a user message; must use {criteria} and {response}, may use "
        "{prompt}",
    )
    high_above: float | None = Field(
        default=3.5, ge=1, le=5, description="vote high at an expected score of at least this; null: never"
    )
    low_below: float | None = Field(
        default=2.5, ge=1, le=5, description="vote low at an expected score of at most this; null: never"
    )
    max_tokens: int = Field(default=512, ge=32, description="context tokens kept, from the end")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(criteria="", prompt="", response="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template may only use {{criteria}}, {{prompt}} and {{response}}: {e}") from e
        if "{criteria}" not in v or "{response}" not in v:
            raise ValueError("template must show the judge {criteria} and the {response}")
        return v

    @model_validator(mode="after")
    def _thresholds(self) -> SelfJudgeLF:
        if self.high_above is None and self.low_below is None:
            raise ValueError("give high_above, low_below or both: otherwise the function never votes")
        if self.high_above is not None and self.low_below is not None and self.low_below >= self.high_above:
            raise ValueError(f"low_below ({self.low_below}) must be below high_above ({self.high_above})")
        return self

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        model, tok = context.causal_lm(self.model)
        texts = [
            _as_user_message(
                tok, self.template.format(criteria=self.criteria, prompt=p or "", response=r or "")
            )
            for p, r in zip(rows["prompt"], rows["response"], strict=True)
        ]
        lp = _answer_logprobs(
            model, tok, texts, SCORE_TOKENS, self.max_tokens, self.batch_size, f"LF {self.name} (self_judge)"
        )
        return expected_score(lp)

    def votes_from_scores(self, scores: np.ndarray) -> np.ndarray:
        out = np.full(scores.shape, ABSTAIN, dtype=np.int8)
        ok = ~np.isnan(scores)
        if self.high_above is not None:
            out[ok & (scores >= self.high_above)] = HIGH
        if self.low_below is not None:
            out[ok & (scores <= self.low_below)] = LOW
        return out

    @property
    def vote_label(self) -> str:
        return _threshold_label(self.high_above is not None, self.low_below is not None)


def expected_score(logprobs: np.ndarray) -> np.ndarray:
    """The expected score (1..k) per row from the log-probabilities of the k score tokens, renormalised over
    them; NaN where none was seen."""
    seen = ~np.isnan(logprobs)
    top = np.max(np.where(seen, logprobs, -np.inf), axis=1, keepdims=True) if logprobs.size else logprobs
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore"):
        p = np.exp(np.nan_to_num(logprobs - top, nan=-np.inf))
        total = p.sum(axis=1)
        values = np.arange(1, logprobs.shape[1] + 1, dtype=np.float64)
        return np.where(total > 0, (p * values).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)


def with_criteria(lfs: tuple, functions: tuple) -> tuple:
    """`lfs` with every `self_judge` that gives no `criteria` shown the descriptions of `functions` (the recipe's
    other labeling functions), one per line."""
    stated = "\n".join(
        f"- {f.description.strip()}"
        for f in functions
        if not isinstance(f, SelfJudgeLF) and getattr(f, "description", "").strip()
    )
    return tuple(
        lf.model_copy(update={"criteria": stated}) if isinstance(lf, SelfJudgeLF) and not lf.criteria else lf
        for lf in lfs
    )
