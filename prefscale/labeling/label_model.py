"""Denoise LF votes into P(high quality) with Snorkel's `LabelModel` (majority vote as the baseline)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from prefscale.labeling.votes import ABSTAIN, HIGH, LOW


@dataclass(frozen=True)
class LabelModelResult:
    labels: pl.DataFrame  # candidate_id, p_high, label, majority_vote, n_votes, votes
    weights: dict[str, float]  # estimated accuracy per LF
    class_balance: list[float]
    params: pl.DataFrame | None = None  # the fitted model (`PARAMS_SCHEMA`): what `predict_p_high` reads

    def agreement_with_majority_vote(self) -> float:
        """The share of rows with a majority vote whose label equals it (NaN when no row has one)."""
        agree = self.labels.filter(pl.col("majority_vote") >= 0)
        if not agree.height:
            return float("nan")
        return float((agree["label"] == agree["majority_vote"]).mean() or 0.0)


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
    versions: Mapping[str, str] | None = None,
    y_dev: np.ndarray | None = None,
) -> LabelModelResult:
    """Fit Snorkel's `LabelModel` (cardinality 2) on the label matrix and return per-row P(high).

    `versions` (LF name → version) makes each row's `votes` traceable: `name@version=high`. `y_dev` (gold
    labels, HIGH/LOW) is passed to Snorkel as `Y_dev`, which sets the class balance the model assumes.
    """
    from snorkel.labeling.model import LabelModel  # heavy import, kept local

    if votes.height == 0:
        raise ValueError("cannot fit a label model on an empty label matrix")
    missing = [n for n in lf_names if n not in votes.columns]
    if missing:
        raise ValueError(f"label matrix lacks LF columns {missing}")
    L = votes.select(lf_names).to_numpy().astype(np.int64)
    logging.getLogger("snorkel").setLevel(logging.WARNING)
    lm = LabelModel(cardinality=2, verbose=False, device="cpu")
    dev = None if y_dev is None or len(y_dev) == 0 else np.asarray(y_dev, dtype=np.int64)
    if dev is not None and len(np.unique(dev)) < 2:
        dev = None  # Snorkel estimates the class balance from Y_dev: one class alone would zero the other
    lm.fit(L, Y_dev=dev, n_epochs=n_epochs, lr=lr, l2=l2, prec_init=prec_init, seed=seed, progress_bar=False)
    proba = lm.predict_proba(L)[:, HIGH]
    # Rows no LF voted on carry no evidence: give them the prior, not whatever the model extrapolates.
    unlabelled = (L == ABSTAIN).all(axis=1)
    prior = float(np.mean(proba[~unlabelled])) if (~unlabelled).any() else 0.5
    proba = np.where(unlabelled, prior, proba)
    with np.errstate(divide="ignore", invalid="ignore"):  # an LF that never fired has no accuracy estimate
        weights = np.nan_to_num(lm.get_weights(), nan=0.0)
    tags = [f"{n}@{versions[n]}" if versions and n in versions else n for n in lf_names]
    lf_votes = [
        ",".join(
            f"{tag}={'high' if v == HIGH else 'low'}"
            for tag, v in zip(tags, row, strict=True)
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
    mu = lm.mu.detach().cpu().numpy().astype(np.float64)  # (LF x vote, class): P(vote | class)
    params = pl.DataFrame(
        {
            "lf_name": [n for n in lf_names for _ in (LOW, HIGH)],
            "vote": [v for _ in lf_names for v in (LOW, HIGH)],
            "p_vote_given_low": mu[:, LOW],
            "p_vote_given_high": mu[:, HIGH],
            "prior_high": float(np.asarray(lm.p)[HIGH]),
            "unlabelled_p_high": prior,
        },
        schema=PARAMS_SCHEMA,
    )
    return LabelModelResult(
        labels=labels,
        weights={n: float(w) for n, w in zip(lf_names, weights, strict=True)},
        class_balance=_balance(proba),
        params=params,
    )


PARAMS_SCHEMA = {
    "lf_name": pl.String,
    "vote": pl.Int8,
    "p_vote_given_low": pl.Float64,
    "p_vote_given_high": pl.Float64,
    "prior_high": pl.Float64,
    "unlabelled_p_high": pl.Float64,
}


def predict_p_high(params: pl.DataFrame, votes: pl.DataFrame) -> np.ndarray:
    """P(high) of new rows under a fitted label model (`LabelModelResult.params`, the `label_model` table of
    `quality_labels`): Snorkel's `predict_proba` (abstains carry no evidence; a row no LF voted on gets the
    fit's prior), so responses the fit never saw, such as an online policy's completions, are scored as
    the iteration's candidates were."""
    if params.height == 0:
        raise ValueError("the label model's parameters are empty")
    names = list(dict.fromkeys(params["lf_name"].to_list()))
    missing = [n for n in names if n not in votes.columns]
    if missing:
        raise ValueError(f"the votes lack the label model's functions {missing}")
    L = votes.select(names).to_numpy().astype(np.int64)
    index = {(n, int(v)): i for i, (n, v) in enumerate(zip(params["lf_name"], params["vote"], strict=True))}
    mu = params.select("p_vote_given_low", "p_vote_given_high").to_numpy()
    log_mu = np.log(np.clip(mu, 1e-12, None))
    prior_high = float(params["prior_high"][0])
    logit = np.full(L.shape[0], np.log(prior_high) - np.log1p(-prior_high))
    for j, name in enumerate(names):
        for v in (LOW, HIGH):
            hit = L[:, j] == v
            if hit.any():
                row = log_mu[index[(name, v)]]
                logit[hit] += row[HIGH] - row[LOW]
    p_high = 1.0 / (1.0 + np.exp(-logit))
    unlabelled = (L == ABSTAIN).all(axis=1)
    return np.where(unlabelled, float(params["unlabelled_p_high"][0]), p_high)


def _balance(proba: np.ndarray) -> list[float]:
    high = float(np.mean(proba >= 0.5))
    return [1.0 - high, high]


GOLD_METRICS_SCHEMA = {
    "model": pl.String,
    "n_gold": pl.Int64,
    "n_predicted": pl.Int64,
    "coverage": pl.Float64,
    "accuracy": pl.Float64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "f1": pl.Float64,
}


def gold_metrics(labels: pl.DataFrame, gold: pl.DataFrame) -> pl.DataFrame:
    """Accuracy and F1 (HIGH = positive) of the label model (`label`) and of majority vote (`majority_vote`)
    on the rows SMEs labelled (`gold`: candidate_id, label). Majority vote abstains on ties and unlabelled
    rows: its scores are over the rows it decides (`coverage` says how many)."""
    joined = labels.join(gold.select("candidate_id", pl.col("label").alias("gold")), on="candidate_id")
    y = joined["gold"].to_numpy().astype(np.int64)
    rows = []
    for model, col in (("label_model", "label"), ("majority_vote", "majority_vote")):
        pred = joined[col].to_numpy().astype(np.int64) if joined.height else np.zeros(0, np.int64)
        decided = pred != ABSTAIN
        p, t = pred[decided], y[decided]
        tp = int(((p == HIGH) & (t == HIGH)).sum())
        fp = int(((p == HIGH) & (t == LOW)).sum())
        fn = int(((p == LOW) & (t == HIGH)).sum())
        n = int(decided.sum())
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        rows.append(
            {
                "model": model,
                "n_gold": joined.height,
                "n_predicted": n,
                "coverage": n / joined.height if joined.height else None,
                "accuracy": float((p == t).mean()) if n else None,
                "precision": precision,
                "recall": recall,
                "f1": f1,
            }
        )
    return pl.DataFrame(rows, schema=GOLD_METRICS_SCHEMA)
