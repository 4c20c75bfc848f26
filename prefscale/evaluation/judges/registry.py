"""The judges by name (the recipe's `evaluation.judges`): one line each, `name: module:JudgeClass`.

A judge is a `Judge` subclass in its own module with a `from_recipe(JudgeContext)` constructor (and, when it
needs something before any work, a `preflight()` check).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefscale.evaluation.judges.base import Judge, JudgeContext
from prefscale.registry import Registry

JUDGES: Registry = Registry(
    "judge",
    {
        "rubric": "prefscale.evaluation.judges.rubric:RubricJudge",
        "pairrm": "prefscale.evaluation.judges.pairrm:PairRMJudge",
        "weak_supervision": "prefscale.evaluation.judges.weak_supervision:WeakSupervisionJudge",
        "local_llm": "prefscale.evaluation.judges.local_llm:LocalLLMJudge",
        "alpaca_eval_gpt4_turbo": "prefscale.evaluation.judges.alpaca_eval:AlpacaEvalJudge",
        "sme": "prefscale.evaluation.judges.sme:SMEJudge",
    },
)
# The judges the leaderboard can be led by (`evaluation.judge`): those independent of the training reward.
# `weak_supervision` never is (it is the recipe's own LFs), `pairrm` not when it is also a reward source (the
# recipe checks), and `rubric` knows only the embedded Lumora domain (the recipe checks `data.source`).
PRIMARY_JUDGES = ("rubric", "sme", "local_llm", "alpaca_eval_gpt4_turbo", "pairrm")


def make_judges(
    names: Sequence[str],
    evaluation: Any,
    *,
    lfs: Sequence[Any] = (),
    label_model: Any = None,
    seed: int = 0,
    compute: Any = None,
    cache_dir: str | Path | None = None,
    local_llm_model: str | Path | None = None,
    sme_votes: Any = None,
) -> list[Judge]:
    """The recipe's judges, in order. Cheap: nothing is loaded until a judge first judges, except that the
    official judge checks `OPENAI_API_KEY` when it is made, before any judging (a missing key fails early).

    `evaluation` is the recipe's `EvaluationConfig`; `local_llm_model` is the fallback model of the local LLM
    judge (the base policy folder) when `evaluation.local_llm_model` is not set; `sme_votes` are the SMEs'
    pairwise votes the `sme` judge reads (`prefscale.evaluation.judges.sme.VOTE_SCHEMA`).
    """
    ctx = JudgeContext(
        evaluation,
        lfs=lfs,
        label_model=label_model,
        seed=seed,
        compute=compute,
        cache_dir=Path(cache_dir) if cache_dir else None,
        local_llm_model=local_llm_model,
        sme_votes=sme_votes,
    )
    classes = [JUDGES.get(name) for name in names]  # an unknown name fails before any judge is made
    for cls in classes:
        cls.preflight()
    return [cls.from_recipe(ctx) for cls in classes]
