"""Pairwise judges that annotate model-vs-reference pairs in alpaca_eval's format, and their AlpacaEval metrics.

Every judge turns a frame of pairs (`instruction`, `output_1` = the reference, `output_2` = the model, plus
`task_type`, `finished_1`, `finished_2` where known; `prefscale.evaluation.eval_sets` builds them) into annotations with
alpaca_eval's columns: `instruction`, `output_1`, `output_2`, `generator_1`, `generator_2`, `annotator` and
`preference`, a float in [1, 2] (1: the reference is better, 2: the model is better, 1.5: a tie; null: the judge's
answer could not be parsed). As alpaca_eval does, a pair whose two outputs are the same text is a tie (1.5)
without asking the judge. `score_1` / `score_2` keep the judge's own per-side numbers where it has them.

The judges (the recipe's `evaluation.judges`):

- `rubric`: the embedded domain's SME rubric (`prefscale.evaluation.rubric.score`): the higher score wins, equal scores tie.
  It reproduces `eval_results`' win rate exactly on the `heldout_base` reference.
- `weak_supervision`: the recipe's own labeling functions and Snorkel label model, fitted on the outputs being
  compared (both sides), P(high) as the reward: the higher reward wins, equal rewards tie.
- `pairrm`: PairRM through llm-blender (`prefscale.rewards.pairrm`): preference = 1 + sigmoid(M[model, ref] -
  M[ref, model]), the order-balanced P(model beats reference). `tiny` is a random offline ranker: a code path.
- `local_llm`: a causal LM from any `from_pretrained` folder asked "Which response is better, A or B?"; P(A) vs
  P(B) from the next-token logits, asked in both orders and averaged to cancel position bias; the team's
  written criteria (`evaluation.judge_criteria`) come before the question when set.
- `alpaca_eval_gpt4_turbo`: the official AlpacaEval 2.0 judge (`weighted_alpaca_eval_gpt4_turbo` by default)
  through `alpaca_eval.annotators.PairwiseAnnotator`; needs `OPENAI_API_KEY` (checked when the judge is made,
  before any work) and honours `OPENAI_BASE_URL` / `OPENAI_API_BASE` for an OpenAI-compatible server.

- `sme`: subject-matter experts' blind pairwise votes from the annotation tool (`prefscale.annotation`); a pair
  nobody voted on has no preference and is left out of the metrics.

`judge_metrics` computes the leaderboard numbers of one judge's annotations with alpaca_eval's own functions
(`prefscale.evaluation.alpaca_metrics.compute_metrics`) and converts the rates to the warehouse's 0-1 scale.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

TIE = 1.5
ALPACA_COLUMNS = (
    "instruction",
    "output_1",
    "output_2",
    "generator_1",
    "generator_2",
    "annotator",
    "preference",
)
ANNOTATION_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int32,
    "task_type": pl.String,
    "instruction": pl.String,
    "output_1": pl.String,
    "output_2": pl.String,
    "generator_1": pl.String,
    "generator_2": pl.String,
    "annotator": pl.String,
    "judge": pl.String,
    "preference": pl.Float64,
    "score_1": pl.Float64,
    "score_2": pl.Float64,
}
PAIR_COLUMNS = ("instruction", "output_1", "output_2")

JUDGE_LABELS = {
    "rubric": "sme_rubric",  # the name eval_results / eval_leaderboard already use
    "weak_supervision": "weak_supervision",
    "pairrm": "pairrm",
    "local_llm": "local_llm",
    "alpaca_eval_gpt4_turbo": "alpaca_eval_gpt4_turbo",
    "sme": "sme",
}

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- the base


def _complete_pairs(pairs: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in PAIR_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs lack columns {missing}")
    n = pairs.height
    defaults = {
        "prompt_id": pl.Series([f"p{k:05d}" for k in range(n)], dtype=pl.String),
        "sample_idx": pl.Series([0] * n, dtype=pl.Int32),
        "task_type": pl.Series([""] * n, dtype=pl.String),
        "finished_1": pl.Series([True] * n, dtype=pl.Boolean),
        "finished_2": pl.Series([True] * n, dtype=pl.Boolean),
    }
    return pairs.with_columns(
        [s.alias(c) for c, s in defaults.items() if c not in pairs.columns]
    ).with_columns(
        pl.col("prompt_id").cast(pl.String),
        pl.col("sample_idx").cast(pl.Int32),
        pl.col("task_type").cast(pl.String).fill_null(""),
        pl.col("finished_1").cast(pl.Boolean).fill_null(True),
        pl.col("finished_2").cast(pl.Boolean).fill_null(True),
    )


@dataclass(frozen=True)
class JudgeContext:
    """What a judge is built from: the recipe's `evaluation` section and the run around it.

    `local_llm_model` is the fallback model of the local LLM judge (the base policy folder); `cache_dir` holds
    judges' caches (PairRM's ranker, alpaca_eval's annotations)."""

    evaluation: Any
    lfs: Sequence[Any] = ()
    label_model: Any = None
    seed: int = 0
    compute: Any = None
    cache_dir: Path | None = None
    local_llm_model: str | Path | None = None
    sme_votes: Any = None  # polars frame of the SMEs' pairwise votes (judges.sme.VOTE_SCHEMA)


class Judge:
    """A pairwise judge. Subclasses implement `_judge(pairs) -> (preferences, score_1, score_2)`."""

    name = "judge"  # the recipe's name for it

    @classmethod
    def preflight(cls) -> None:
        """Checks that must pass before any judge is made (e.g. an API key); none by default."""

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> Judge:
        """The judge a recipe's evaluation section asks for."""
        raise NotImplementedError(f"{cls.__name__} has no from_recipe")

    @property
    def label(self) -> str:
        """The judge's name in the metrics and the leaderboard."""
        return JUDGE_LABELS.get(self.name, self.name)

    @property
    def annotator(self) -> str:
        """What exactly judged (the `annotator` column): the label plus the model or config where it matters."""
        return self.label

    def annotate(self, pairs: pl.DataFrame, *, generator_1: str, generator_2: str) -> pl.DataFrame:
        """Annotations (`ANNOTATION_SCHEMA`) of `pairs` in their order; identical outputs tie without judging."""
        pairs = _complete_pairs(pairs)
        same = (pairs["output_1"] == pairs["output_2"]).to_list()
        todo = [k for k, s in enumerate(same) if not s]
        prefs: list[float | None] = [TIE] * pairs.height
        s1: list[float | None] = [None] * pairs.height
        s2: list[float | None] = [None] * pairs.height
        if todo:
            sub = pairs[todo]
            p, a, b = self._judge(sub)
            if not (len(p) == len(a) == len(b) == sub.height):
                raise RuntimeError(f"{self.label}: judged {len(p)} of {sub.height} pairs")
            for k, pk, ak, bk in zip(todo, p, a, b, strict=True):
                prefs[k], s1[k], s2[k] = _preference(pk, self.label), ak, bk
        return pl.DataFrame(
            {
                "prompt_id": pairs["prompt_id"],
                "sample_idx": pairs["sample_idx"],
                "task_type": pairs["task_type"],
                "instruction": pairs["instruction"],
                "output_1": pairs["output_1"],
                "output_2": pairs["output_2"],
                "generator_1": [generator_1] * pairs.height,
                "generator_2": [generator_2] * pairs.height,
                "annotator": [self.annotator] * pairs.height,
                "judge": [self.label] * pairs.height,
                "preference": prefs,
                "score_1": s1,
                "score_2": s2,
            },
            schema=ANNOTATION_SCHEMA,
        )

    def _judge(
        self, pairs: pl.DataFrame
    ) -> tuple[list[float | None], list[float | None], list[float | None]]:
        raise NotImplementedError  # pragma: no cover


def _preference(value: Any, judge: str) -> float | None:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return None
    if not 1.0 - 1e-9 <= v <= 2.0 + 1e-9:
        raise RuntimeError(f"{judge}: preference {v!r} outside [1, 2]")
    return min(2.0, max(1.0, v))


def compare_scores(a: float, b: float, eps: float = 1e-9) -> float:
    """alpaca_eval's preference from two scores (a: the reference, b: the model): 1, 2, or 1.5 when equal."""
    if abs(a - b) < eps:
        return TIE
    return 2.0 if b > a else 1.0
