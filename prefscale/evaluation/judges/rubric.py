"""The `rubric` judge: the embedded domain's SME rubric; the higher score wins, equal scores tie."""

from __future__ import annotations

import polars as pl

from prefscale.evaluation import rubric
from prefscale.evaluation.judges.base import Judge, JudgeContext, compare_scores

# ---------------------------------------------------------------------------------------------- rubric judge


class RubricJudge(Judge):
    """The SME rubric (`prefscale.evaluation.rubric.score`, the task type of the prompt, unfinished samples penalised)."""

    name = "rubric"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> RubricJudge:
        return cls()

    def _judge(self, pairs: pl.DataFrame):
        prefs, s1, s2 = [], [], []
        for r1, r2, t, f1, f2 in pairs.select(
            "output_1", "output_2", "task_type", "finished_1", "finished_2"
        ).iter_rows():
            a, b = rubric.score(r1, t or "", bool(f1)), rubric.score(r2, t or "", bool(f2))
            prefs.append(compare_scores(a, b))
            s1.append(a)
            s2.append(b)
        return prefs, s1, s2
