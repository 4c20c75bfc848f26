"""The judges by name (the recipe's `evaluation.judges`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefscale.evaluation.judges.alpaca_eval import AlpacaEvalJudge, require_openai_key
from prefscale.evaluation.judges.base import Judge
from prefscale.evaluation.judges.local_llm import LocalLLMJudge
from prefscale.evaluation.judges.pairrm import PairRMJudge
from prefscale.evaluation.judges.rubric import RubricJudge
from prefscale.evaluation.judges.weak_supervision import WeakSupervisionJudge

# ----------------------------------------------------------------------------------------------- the factory


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
) -> list[Judge]:
    """The recipe's judges, in order. Cheap: nothing is loaded until a judge first judges, except that the
    official judge checks `OPENAI_API_KEY` here, before any other work (a missing key fails the whole step early).

    `evaluation` is the recipe's `EvaluationConfig`; `local_llm_model` is the fallback model of the local LLM
    judge (the base policy folder) when `evaluation.local_llm_model` is not set.
    """
    if "alpaca_eval_gpt4_turbo" in names:
        require_openai_key()
    judges: list[Judge] = []
    cache = Path(cache_dir) if cache_dir else None
    for name in names:
        if name == "rubric":
            judges.append(RubricJudge())
        elif name == "weak_supervision":
            if not lfs:
                raise ValueError("the weak_supervision judge needs the recipe's labeling functions")
            judges.append(WeakSupervisionJudge(lfs, label_model, seed=seed))
        elif name == "pairrm":
            judges.append(
                PairRMJudge(
                    evaluation.pairrm_model,
                    cache_dir=cache / "pairrm" if cache else None,
                    device=getattr(compute, "device", "cpu"),
                    batch_size=evaluation.judge_batch_size,
                    seed=seed,
                )
            )
        elif name == "local_llm":
            model = evaluation.local_llm_model or local_llm_model
            if model is None:
                raise ValueError("the local_llm judge needs a model: set evaluation.local_llm_model")
            judges.append(LocalLLMJudge(model, compute=compute, batch_size=evaluation.judge_batch_size))
        elif name == "alpaca_eval_gpt4_turbo":
            judge = AlpacaEvalJudge(evaluation.annotator_config)
            if cache:  # alpaca_eval's own JSON cache of annotations: a re-run does not pay twice
                judge.caching_path = cache / "alpaca_eval" / f"annotations_{judge.annotator}.json"
            judges.append(judge)
        else:
            raise ValueError(f"unknown judge {name!r}")
    return judges
