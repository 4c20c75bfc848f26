"""The `sme` judge: subject-matter experts' blind pairwise votes (Label Studio's SME evaluation project).

SMEs see a held-out prompt with the reference's and the model's reply in random order and answer which is better
or that they tie (`prefscale.annotation.pairwise`). Each vote is keyed by the pair it judged: prompt id, sample
index and the sha256 of both texts, so a vote counts only for exactly the pair the SME saw (a re-sampled reply
is a new pair). Several SMEs' votes on one pair are averaged; a pair nobody voted on has no preference (null),
and alpaca_eval's metrics leave it out, so the win rate is over the voted pairs and `n_total` is their count.
"""

from __future__ import annotations

import hashlib

import polars as pl

from prefscale.evaluation.judges.base import Judge, JudgeContext

VOTE_SCHEMA = {
    "prompt_id": pl.String,
    "sample_idx": pl.Int32,
    "output_1_sha256": pl.String,  # the reference's reply
    "output_2_sha256": pl.String,  # the model's reply
    "preference": pl.Float64,  # 1: the reference is better, 2: the model is better, 1.5: a tie
    "annotator": pl.String,
}


def text_sha256(text: str) -> str:
    """The key of one reply in a vote."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SMEJudge(Judge):
    """The SMEs' blind pairwise votes, matched to the compared pairs by prompt, sample and both texts."""

    name = "sme"

    @classmethod
    def from_recipe(cls, ctx: JudgeContext) -> SMEJudge:
        return cls(ctx.sme_votes)

    def __init__(self, votes: pl.DataFrame | None) -> None:
        votes = pl.DataFrame(schema=VOTE_SCHEMA) if votes is None else votes
        missing = sorted(set(VOTE_SCHEMA) - set(votes.columns))
        if missing:
            raise ValueError(f"the sme judge's votes lack columns {missing}")
        self.votes = votes.select(list(VOTE_SCHEMA)).cast(VOTE_SCHEMA)  # type: ignore[arg-type]

    @property
    def annotator(self) -> str:
        n = self.votes["annotator"].drop_nulls().n_unique()
        return f"sme[{n} annotator{'s' if n != 1 else ''}]"

    def _judge(self, pairs: pl.DataFrame):
        keyed = pairs.select(
            pl.int_range(0, pairs.height).alias("__row"),
            pl.col("prompt_id"),
            pl.col("sample_idx").cast(pl.Int32),
            pl.col("output_1").map_elements(text_sha256, return_dtype=pl.String).alias("output_1_sha256"),
            pl.col("output_2").map_elements(text_sha256, return_dtype=pl.String).alias("output_2_sha256"),
        )
        mean = self.votes.group_by("prompt_id", "sample_idx", "output_1_sha256", "output_2_sha256").agg(
            pl.col("preference").mean()
        )
        joined = keyed.join(
            mean, on=["prompt_id", "sample_idx", "output_1_sha256", "output_2_sha256"], how="left"
        ).sort("__row")
        prefs = joined["preference"].to_list()
        return prefs, [None] * len(prefs), [None] * len(prefs)
