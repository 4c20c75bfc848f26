"""How much labeling functions and labels track response length (longer-is-better biases lengthen DPO answers).

`spearman` is the shared rank-correlation helper. The lengths of a label matrix's responses are stored beside it
(`lf_votes`' `lengths` table, `response_lengths`), so `quality_labels` reads the lengths of exactly the
candidates that were labelled (`recorded_lengths`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from prefscale.labeling.votes import HIGH, LOW
from prefscale.storage import ArtifactRef

LENGTHS_TABLE = "lengths"


def _floats(v: Sequence[float] | np.ndarray | pl.Series) -> np.ndarray:
    if isinstance(v, pl.Series):
        return v.cast(pl.Float64).fill_null(np.nan).to_numpy()
    return np.asarray(v, dtype=np.float64)


def spearman(
    a: Sequence[float] | np.ndarray | pl.Series, b: Sequence[float] | np.ndarray | pl.Series
) -> float | None:
    """Spearman's rank correlation (average ranks for ties) over the pairs where both values are finite; None
    when it cannot be computed (fewer than 2 such pairs, or either side constant)."""
    x, y = _floats(a), _floats(b)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return None
    rx = pl.Series(x[ok]).rank("average").to_numpy()
    ry = pl.Series(y[ok]).rank("average").to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def response_lengths(candidates: pl.DataFrame) -> pl.DataFrame:
    """`candidate_id` and `response_chars` (the response's length in characters) of each candidate."""
    return candidates.select(
        "candidate_id", pl.col("response").str.len_chars().cast(pl.Int64).alias("response_chars")
    )


def recorded_lengths(votes_ref: ArtifactRef) -> pl.DataFrame | None:
    """The response lengths stored with a label-matrix version; None for a version made before they were."""
    path = votes_ref.file(f"{LENGTHS_TABLE}.parquet")
    return pl.read_parquet(path) if path.is_file() else None


def _chars_of(frame: pl.DataFrame, lengths: pl.DataFrame) -> np.ndarray:
    """The response length of each row of `frame` (by `candidate_id`; NaN where unknown), in row order."""
    joined = frame.select("candidate_id").join(
        lengths.select("candidate_id", "response_chars"), on="candidate_id", how="left", maintain_order="left"
    )
    return joined["response_chars"].cast(pl.Float64).fill_null(np.nan).to_numpy()


def lf_length_correlations(
    votes: pl.DataFrame, lf_names: Sequence[str], lengths: pl.DataFrame | None
) -> list[float | None]:
    """Per LF: Spearman correlation of its signed vote (high=+1, low=-1, abstain=0) with response length, over
    all rows. Positive: it favours longer responses (votes high on long rows or low on short ones); for a
    function that votes on every row it equals the correlation of high=1/low=0 with length. None without
    lengths, or when the vote is constant (it abstains everywhere, or casts one vote on every row)."""
    if lengths is None or not votes.height:
        return [None] * len(lf_names)
    chars = _chars_of(votes, lengths)
    mat = votes.select(lf_names).to_numpy().astype(np.int64)
    signed = np.where(mat == HIGH, 1.0, np.where(mat == LOW, -1.0, 0.0))
    return [spearman(signed[:, j], chars) for j in range(len(lf_names))]


def label_length_correlation(labels: pl.DataFrame, lengths: pl.DataFrame | None) -> float | None:
    """Spearman correlation of the label model's P(high) (`p_high`) with response length, over the candidates;
    None without lengths or when either side is constant."""
    if lengths is None or not labels.height:
        return None
    return spearman(labels["p_high"], _chars_of(labels, lengths))


def read_votes_with_lengths(votes_ref: ArtifactRef) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """A label-matrix version's votes (`data`) and the response lengths stored with it (`recorded_lengths`)."""
    return pl.read_parquet(votes_ref.file()), recorded_lengths(votes_ref)
