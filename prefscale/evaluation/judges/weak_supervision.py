"""The `weak_supervision` judge: the recipe's LFs and a label model fitted on both sides; the higher P(high) wins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from prefscale.evaluation.judges.base import Judge, JudgeContext, compare_scores
from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.label_model import fit_label_model
from prefscale.labeling.votes import validate_lfs

# ------------------------------------------------------------------------------------ weak-supervision judge


class WeakSupervisionJudge(Judge):
    """The recipe's LFs → Snorkel label model, fitted on both sides' outputs; P(high) is the reward."""

    name = "weak_supervision"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> WeakSupervisionJudge:
        if not ctx.lfs:
            raise ValueError("the weak_supervision judge needs the recipe's labeling functions")
        return cls(ctx.lfs, ctx.label_model, seed=ctx.seed)

    def __init__(self, lfs: Sequence[Any], label_model: Any = None, *, seed: int = 0) -> None:
        validate_lfs(lfs)
        self.lfs = list(lfs)
        self.lm = label_model
        self.seed = seed

    @property
    def annotator(self) -> str:
        return f"label_model({len(self.lfs)} LFs)"

    def _judge(self, pairs: pl.DataFrame):
        n = pairs.height
        side = lambda out, fin, tag: pairs.select(  # noqa: E731
            pl.format(f"{tag}{{}}", pl.int_range(0, n)).alias("candidate_id"),
            pl.col("instruction").alias("prompt"),
            pl.col(out).alias("response"),
            pl.col("task_type").fill_null(""),
            pl.when(pl.col(fin)).then(pl.lit("stop")).otherwise(pl.lit("length")).alias("finish_reason"),
        )
        rows = pl.concat([side("output_1", "finished_1", "r"), side("output_2", "finished_2", "m")])
        votes = apply_lfs(rows, self.lfs)
        kwargs = {}
        if self.lm is not None:
            kwargs = {k: getattr(self.lm, k) for k in ("n_epochs", "lr", "l2", "prec_init")}
        fit = fit_label_model(votes, [lf.name for lf in self.lfs], seed=self.seed, **kwargs)
        p = dict(zip(fit.labels["candidate_id"], fit.labels["p_high"], strict=True))
        s1 = [float(p[f"r{k}"]) for k in range(n)]
        s2 = [float(p[f"m{k}"]) for k in range(n)]
        return [compare_scores(a, b) for a, b in zip(s1, s2, strict=True)], s1, s2
