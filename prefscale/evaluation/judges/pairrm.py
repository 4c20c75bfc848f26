"""The `pairrm` judge: PairRM through llm-blender, order-balanced P(model beats reference)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from prefscale.evaluation.judges.base import Judge, JudgeContext

TINY_PAIRRM = "tiny"


# -------------------------------------------------------------------------------------------------- PairRM


class PairRMJudge(Judge):
    """PairRM (llm-blender): preference = 1 + P(model beats reference), order-balanced (both orders are run)."""

    name = "pairrm"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> PairRMJudge:
        return cls(
            ctx.evaluation.pairrm_model,
            cache_dir=ctx.cache_dir / "pairrm" if ctx.cache_dir else None,
            device=getattr(ctx.compute, "device", "cpu"),
            batch_size=ctx.evaluation.judge_batch_size,
            seed=ctx.seed,
        )

    def __init__(
        self,
        model: str = TINY_PAIRRM,
        *,
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        self.model, self.cache_dir, self.device = model, cache_dir, device
        self.batch_size, self.seed = batch_size, seed
        self._blender: Any = None

    @property
    def annotator(self) -> str:
        return f"pairrm[{self.model}]"

    def ranker_path(self) -> str:
        """The ranker folder or hub id; `tiny` builds (once, under `cache_dir`) a random tiny ranker."""
        if self.model != TINY_PAIRRM:
            return self.model
        from prefscale.rewards.pairrm import build_tiny_ranker  # lazy: llm-blender

        root = Path(self.cache_dir) if self.cache_dir else Path(tempfile.mkdtemp(prefix="prefscale-pairrm-"))
        folder = root / f"pairrm-tiny-seed{self.seed}"
        if not (folder / "config.json").is_file():
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".pairrm-", dir=root))
            try:
                build_tiny_ranker(tmp / "ranker", seed=self.seed)
                os.replace(tmp / "ranker", folder)
            except OSError:
                if not (folder / "config.json").is_file():  # not built concurrently either: a real error
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return str(folder)

    def _judge(self, pairs: pl.DataFrame):
        from prefscale.rewards.pairrm import (
            load_ranker,
            pairrm_matrix,
            win_probabilities,
        )  # lazy: llm-blender

        if self._blender is None:
            self._blender = load_ranker(self.ranker_path(), self.device)
        mats = pairrm_matrix(
            self._blender,
            pairs["instruction"].to_list(),
            [[a, b] for a, b in zip(pairs["output_1"], pairs["output_2"], strict=True)],
            self.batch_size,
            label=f"judge {self.annotator}",
        )
        p_model = [float(win_probabilities(m)[1, 0]) for m in mats]  # row 1 = the model, column 0 = the ref
        return [1.0 + p for p in p_model], [1.0 - p for p in p_model], p_model
