from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from prefscale.labeling.label_model import fit_label_model, majority_vote
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW

LF_NAMES = ["lf0", "lf1", "lf2", "lf3", "lf4"]
N_UNLABELLED = 12


@pytest.fixture(scope="module")
def synthetic():
    """400 rows from a hidden binary label; 5 LFs of accuracy 0.8-0.9 voting on ~70% of rows each."""
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    cols = {}
    for name, acc in zip(LF_NAMES, [0.8, 0.85, 0.9, 0.8, 0.85], strict=True):
        vote = np.where(rng.random(n) < acc, y, 1 - y)
        vote = np.where(rng.random(n) < 0.3, ABSTAIN, vote)
        vote[:N_UNLABELLED] = ABSTAIN  # rows no LF voted on
        cols[name] = vote.astype(np.int8)
    votes = pl.DataFrame({"candidate_id": [f"c{i:03d}" for i in range(n)], **cols})
    return votes, y, fit_label_model(votes, LF_NAMES, seed=0)


def test_p_high_recovers_the_hidden_label(synthetic):
    votes, y, result = synthetic
    labels = result.labels
    assert labels.columns == ["candidate_id", "p_high", "label", "majority_vote", "n_votes", "votes"]
    assert labels["candidate_id"].to_list() == votes["candidate_id"].to_list()
    p = labels["p_high"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    labelled = slice(N_UNLABELLED, None)
    accuracy = np.mean((p[labelled] >= 0.5) == y[labelled])
    assert accuracy > 0.8
    assert np.corrcoef(p[labelled], y[labelled])[0, 1] > 0.6
    assert labels["label"].to_list() == [int(v >= 0.5) for v in p]


def test_label_model_beats_or_matches_single_lfs(synthetic):
    votes, y, result = synthetic
    p = result.labels["p_high"].to_numpy()
    for name in LF_NAMES:
        col = votes[name].to_numpy()
        voted = col != ABSTAIN
        lf_acc = np.mean(col[voted] == y[voted])
        assert lf_acc > 0.7  # sanity of the synthetic data
    assert np.mean((p[N_UNLABELLED:] >= 0.5) == y[N_UNLABELLED:]) > 0.85


def test_unlabelled_rows_get_the_prior(synthetic):
    _, _, result = synthetic
    p = result.labels["p_high"].to_numpy()
    prior = p[N_UNLABELLED:].mean()
    assert p[:N_UNLABELLED] == pytest.approx(np.full(N_UNLABELLED, prior))
    assert result.labels["n_votes"][:N_UNLABELLED].to_list() == [0] * N_UNLABELLED
    assert result.labels["votes"][:N_UNLABELLED].to_list() == [""] * N_UNLABELLED
    assert result.labels["majority_vote"][:N_UNLABELLED].to_list() == [ABSTAIN] * N_UNLABELLED


def test_result_metadata(synthetic):
    votes, _, result = synthetic
    labels = result.labels
    mat = votes.select(LF_NAMES).to_numpy()
    assert labels["n_votes"].to_list() == (mat != ABSTAIN).sum(axis=1).tolist()
    assert labels["majority_vote"].to_list() == majority_vote(mat).tolist()
    row = mat[N_UNLABELLED]
    expected = ",".join(
        f"{n}={'high' if v == HIGH else 'low'}" for n, v in zip(LF_NAMES, row, strict=True) if v != ABSTAIN
    )
    assert labels["votes"][N_UNLABELLED] == expected
    assert list(result.weights) == LF_NAMES
    assert all(0.0 <= w <= 1.0 for w in result.weights.values())
    assert sum(result.class_balance) == pytest.approx(1.0)
    assert result.class_balance[1] == pytest.approx(float(np.mean(labels["p_high"].to_numpy() >= 0.5)))


def test_majority_vote_semantics():
    m = np.array(
        [
            [HIGH, HIGH, LOW],
            [LOW, LOW, HIGH],
            [HIGH, LOW, ABSTAIN],  # tie
            [ABSTAIN, ABSTAIN, ABSTAIN],  # no votes
            [HIGH, ABSTAIN, ABSTAIN],
            [ABSTAIN, LOW, ABSTAIN],
        ]
    )
    assert majority_vote(m).tolist() == [HIGH, LOW, ABSTAIN, ABSTAIN, HIGH, LOW]


def test_empty_matrix_rejected():
    empty = pl.DataFrame({"candidate_id": [], "lf0": []}, schema={"candidate_id": pl.String, "lf0": pl.Int8})
    with pytest.raises(ValueError, match="empty label matrix"):
        fit_label_model(empty, ["lf0"])


def test_missing_lf_column_rejected():
    votes = pl.DataFrame({"candidate_id": ["a"], "lf0": [1]})
    with pytest.raises(ValueError, match=r"lacks LF columns \['lf9'\]"):
        fit_label_model(votes, ["lf0", "lf9"])
