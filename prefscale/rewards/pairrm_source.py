"""The `pairrm` reward source: llm-blender's PairRM rank score, comparing the rows of one group (a prompt).

The score of a row is `mean_j (M[i, j] - M[j, i])` over its group's comparison matrix `M`
(`prefscale.rewards.pairrm`); a group with one row has the 1×1 zero matrix, so its score is 0, the neutral
score, and no ranker runs for it. llm-blender loads only when a ranker scores something.
"""

from __future__ import annotations

import tempfile

import polars as pl

from prefscale.compute import resolve_compute
from prefscale.rewards.base import DEFAULT_PAIRRM, TINY_PAIRRM, ScoringContext, SourceScores

MATRIX_SCHEMA = {
    "candidate_id": pl.String,
    "score": pl.Float64,
    "matrix_index": pl.Int32,
    "pairrm_logits": pl.List(pl.Float64),
}


def pairrm_model_ref(model: str | None, policy_source: str) -> str:
    """The ranker a `pairrm` source uses: its `model`, else the tiny ranker for the embedded policy, else PairRM."""
    if model:
        return model
    return TINY_PAIRRM if policy_source == "embedded" else DEFAULT_PAIRRM


def pairrm_source_scores(
    candidates: pl.DataFrame, model: str, *, device: str = "cpu", seed: int = 0, batch_size: int = 8
) -> pl.DataFrame:
    """PairRM scores (`candidate_id`, `score`, `matrix_index`, `pairrm_logits`) from a ranker or `tiny`.

    `tiny` builds `prefscale.pairrm.build_tiny_ranker(seed=seed)` in a temporary folder: random weights, so it
    checks the code path, not quality. Every prompt needs at least 2 candidates.
    """
    from prefscale.rewards.pairrm import build_tiny_ranker, load_ranker, pairrm_rewards  # lazy: llm-blender

    with tempfile.TemporaryDirectory(prefix="prefscale-pairrm-") as tmp:
        ref = build_tiny_ranker(f"{tmp}/tiny-pairrm", seed=seed) if model == TINY_PAIRRM else model
        blender = load_ranker(ref, device)
        pr = pairrm_rewards(candidates, blender, batch_size=batch_size)
    return pr.select("candidate_id", pl.col("reward").alias("score"), "matrix_index", "pairrm_logits")


class PairRMSource:
    """PairRM within each `ctx.group_by` group, with `ctx.ranker` (or the policy source's default ranker)."""

    name = "pairrm"

    def score(self, rows: pl.DataFrame, ctx: ScoringContext) -> SourceScores:
        model = ctx.ranker
        if not model and ctx.policy_source is not None:
            model = pairrm_model_ref(None, ctx.policy_source)
        if not model:
            raise ctx.missing(self.name, "a ranker (a folder, hub id or 'tiny')", "ranker")
        absent = [c for c in ctx.group_by if c not in rows.columns]
        if absent:
            raise ctx.missing(self.name, f"the rows' {', '.join(absent)} column", "group_by")
        if ctx.group_by != ("prompt_id",):  # pairrm_rewards compares the rows that share a prompt_id
            key = pl.format("#".join("{}" for _ in ctx.group_by), *ctx.group_by)
            rows = rows.with_columns(key.alias("prompt_id"))
        size = pl.len().over("prompt_id")
        multi, single = rows.filter(size > 1), rows.filter(size == 1)
        parts = []
        if multi.height:
            device = resolve_compute("auto").device if ctx.device == "auto" else ctx.device
            parts.append(pairrm_source_scores(multi, model, device=device, seed=ctx.seed))
        if single.height or not parts:
            parts.append(
                single.select(
                    "candidate_id",
                    pl.lit(0.0).alias("score"),
                    pl.lit(0).alias("matrix_index"),
                    pl.lit([0.0]).alias("pairrm_logits"),
                ).cast(MATRIX_SCHEMA)
            )
        pr = parts[0] if len(parts) == 1 else pl.concat(parts)
        return SourceScores(
            pr.select("candidate_id", "score"), pr.select("candidate_id", "matrix_index", "pairrm_logits")
        )


PAIRRM = PairRMSource()
