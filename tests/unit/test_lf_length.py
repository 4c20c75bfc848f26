"""How much LFs and labels track response length: `prefscale.labeling.length` and lf_analysis' column."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from prefscale.labeling.analysis import lf_analysis
from prefscale.labeling.length import (
    LENGTHS_TABLE,
    label_length_correlation,
    lf_length_correlations,
    read_votes_with_lengths,
    recorded_lengths,
    response_lengths,
    spearman,
)
from prefscale.labeling.pattern_kinds import RegexLF
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW
from prefscale.storage import ArtifactStore

N = 20
IDS = [f"c{i}" for i in range(N)]
RESPONSES = ["x" * (10 + 7 * i) for i in range(N)]  # row i is longer than row i-1
LONG = np.arange(N) >= N // 2


def _votes(**columns: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"candidate_id": IDS, **{k: v.astype(np.int8) for k, v in columns.items()}},
    )


def _lengths() -> pl.DataFrame:
    return response_lengths(pl.DataFrame({"candidate_id": IDS, "response": RESPONSES}))


def test_lf_analysis_length_correlation_follows_what_the_function_fires_on():
    votes = _votes(
        long_high=np.where(LONG, HIGH, ABSTAIN),  # favours long replies
        short_high=np.where(~LONG, HIGH, ABSTAIN),  # favours short ones
        short_low=np.where(~LONG, LOW, ABSTAIN),  # pushes short ones down: favours long ones
        both=np.where(LONG, HIGH, LOW),  # votes on every row
        silent=np.full(N, ABSTAIN),
        everywhere=np.full(N, HIGH),
    )
    lfs = [RegexLF(name=n, pattern="q", vote="high") for n in votes.columns[1:]]
    a = lf_analysis(votes, lfs, lengths=_lengths())
    assert a.columns[-1] == "length_correlation" and a.schema["length_correlation"] == pl.Float64
    rho = dict(zip(a["lf_name"], a["length_correlation"], strict=True))
    assert rho["long_high"] > 0.8 and rho["short_low"] > 0.8
    assert rho["short_high"] < -0.8
    assert rho["long_high"] == pytest.approx(-rho["short_high"])
    # voting on every row: the correlation of high=1 / low=0 with length (binary vs distinct lengths: < 1)
    assert rho["both"] == pytest.approx(spearmanr(LONG.astype(int), [len(r) for r in RESPONSES]).statistic)
    assert rho["silent"] is None and rho["everywhere"] is None  # abstain-only, one vote everywhere


def test_lf_analysis_without_lengths_or_rows_has_a_null_column():
    votes = _votes(a=np.where(LONG, HIGH, ABSTAIN))
    lfs = [RegexLF(name="a", pattern="q", vote="high")]
    assert lf_analysis(votes, lfs)["length_correlation"].to_list() == [None]
    assert lf_analysis(votes.head(0), lfs, lengths=_lengths())["length_correlation"].to_list() == [None]


def test_rows_without_a_length_are_left_out():
    votes = _votes(a=np.where(LONG, HIGH, ABSTAIN))
    lengths = _lengths().filter(pl.col("candidate_id").is_in(IDS[:3] + IDS[-3:]))
    (rho,) = lf_length_correlations(votes, ["a"], lengths)
    assert rho == pytest.approx(spearmanr([0, 0, 0, 1, 1, 1], range(6)).statistic)


def test_spearman_matches_scipy_with_ties_and_skips_non_finite():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, 30).astype(float)
        y = rng.normal(size=30).round(1)
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman(pl.Series([1.0, None, 3.0, math.nan, 4.0]), [1, 100, 2, -100, 3]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1], [2]) is None
    assert spearman([], []) is None


def test_label_length_correlation():
    labels = pl.DataFrame({"candidate_id": IDS[::-1], "p_high": np.linspace(1, 0, N)})  # longer: higher
    assert label_length_correlation(labels, _lengths()) == pytest.approx(1.0)
    assert label_length_correlation(labels.with_columns(p_high=pl.lit(0.5)), _lengths()) is None
    assert label_length_correlation(labels, None) is None


def test_lengths_are_read_from_the_label_matrix_version(tmp_path):
    store = ArtifactStore(tmp_path)
    votes = _votes(a=np.where(LONG, HIGH, ABSTAIN))
    cands = pl.DataFrame({"candidate_id": IDS, "response": ["héllo", *RESPONSES[1:]]})
    ref = store.write_tables("lf_votes", "1", {"data": votes, LENGTHS_TABLE: response_lengths(cands)})
    read, lengths = read_votes_with_lengths(ref)
    assert read.equals(votes)
    assert lengths is not None and lengths["response_chars"][0] == 5  # characters, not bytes
    assert lengths["response_chars"].to_list()[1:] == [len(r) for r in RESPONSES[1:]]
    older = store.write_tables("lf_votes", "2", {"data": votes})  # made before lengths were stored
    assert recorded_lengths(older) is None
