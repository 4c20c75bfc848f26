"""Denoise LF votes into P(high quality) with Snorkel's `LabelModel` (majority vote as the baseline)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefscale.labeling import ABSTAIN, HIGH, LOW


@dataclass(frozen=True)
class LabelModelResult:
    labels: pl.DataFrame  # candidate_id, p_high, label, majority_vote, n_votes, votes
    weights: dict[str, float]  # estimated accuracy per LF
    class_balance: list[float]


def majority_vote(matrix: np.ndarray) -> np.ndarray:
    """Majority label per row: HIGH, LOW, or ABSTAIN when tied or unlabelled."""
    n_high = (matrix == HIGH).sum(axis=1)
    n_low = (matrix == LOW).sum(axis=1)
    return np.where(n_high > n_low, HIGH, np.where(n_low > n_high, LOW, ABSTAIN))


def fit_label_model(
    votes: pl.DataFrame,
    lf_names: Sequence[str],
    *,
    n_epochs: int = 300,
    lr: float = 0.01,
    l2: float = 1.0,
    prec_init: float = 0.8,
    seed: int = 0,
) -> LabelModelResult:
    """Fit Snorkel's `LabelModel` (cardinality 2) on the label matrix and return per-row P(high)."""
    from snorkel.labeling.model import LabelModel  # heavy import, kept local

    if votes.height == 0:
        raise ValueError("cannot fit a label model on an empty label matrix")
    missing = [n for n in lf_names if n not in votes.columns]
    if missing:
        raise ValueError(f"label matrix lacks LF columns {missing}")
    L = votes.select(lf_names).to_numpy().astype(np.int64)
    logging.getLogger("snorkel").setLevel(logging.WARNING)
    lm = LabelModel(cardinality=2, verbose=False, device="cpu")
    lm.fit(L, n_epochs=n_epochs, lr=lr, l2=l2, prec_init=prec_init, seed=seed, progress_bar=False)
    proba = lm.predict_proba(L)[:, HIGH]
    # Rows no LF voted on carry no evidence: give them the prior, not whatever the model extrapolates.
    unlabelled = (L == ABSTAIN).all(axis=1)
    prior = float(np.mean(proba[~unlabelled])) if (~unlabelled).any() else 0.5
    proba = np.where(unlabelled, prior, proba)
    with np.errstate(divide="ignore", invalid="ignore"):  # an LF that never fired has no accuracy estimate
        weights = np.nan_to_num(lm.get_weights(), nan=0.0)
    lf_votes = [
        ",".join(
            f"{name}={'high' if v == HIGH else 'low'}"
            for name, v in zip(lf_names, row, strict=True)
            if v != ABSTAIN
        )
        for row in L
    ]
    labels = pl.DataFrame(
        {
            "candidate_id": votes["candidate_id"],
            "p_high": proba.astype(np.float64),
            "label": np.where(proba >= 0.5, HIGH, LOW).astype(np.int8),
            "majority_vote": majority_vote(L).astype(np.int8),
            "n_votes": (L != ABSTAIN).sum(axis=1).astype(np.int32),
            "votes": lf_votes,
        }
    )
    return LabelModelResult(
        labels=labels,
        weights={n: float(w) for n, w in zip(lf_names, weights, strict=True)},
        class_balance=_balance(proba),
    )


def _balance(proba: np.ndarray) -> list[float]:
    high = float(np.mean(proba >= 0.5))
    return [1.0 - high, high]
