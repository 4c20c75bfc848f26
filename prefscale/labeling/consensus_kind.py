"""The `consensus` labeling function: how central a response is among the responses to the same prompt.

Self-consistency (Wang et al. 2023) and minimum-Bayes-risk selection (Kumar & Byrne 2004; Freitag et al. 2022)
rest on one observation: when several answers to one prompt are sampled, the content most of them share is more
often right than what only one says, so the answer closest to the others is the better bet. Unlike length, it
rewards a short answer that says what the others agree on, and marks down a long one that drifts away from the
question, repeats itself or invents a continuation. It needs several responses per prompt: the N candidates of
an iteration, or several models' answers (`prefscale score` groups rows by prompt text).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field

from prefscale.labeling.model_kinds import ModelContext, _CosineLF

STOP_WORDS = "english"  # scikit-learn's built-in list: function words say nothing about agreement


class ConsensusLF(_CosineLF):
    """Centrality among the prompt's responses: each response's mean cosine similarity to the other responses
    to the same prompt, less the mean of that over the prompt's responses (0 = as central as the average
    answer). At least `high_above` votes high, at most `low_below` votes low; a prompt with fewer than
    `min_responses` responses abstains. `tfidf` leaves English stop words out: function words say nothing about
    agreement."""

    kind: Literal["consensus"] = Field(
        default="consensus",
        description="consensus: how close a response is to the other responses to the same prompt "
        "(self-consistency)",
    )
    min_responses: int = Field(
        default=3,
        ge=3,
        description="responses a prompt needs for its responses to be voted on (with two, each is as close "
        "to the other as the other is to it)",
    )

    @property
    def required_columns(self) -> set[str]:
        return {"prompt_id", "response"}

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        responses = rows["response"].fill_null("").to_list()
        if self.backend == "tfidf":
            vectors = _tfidf_vectors(responses)
        else:
            vectors = self._embed_texts(responses, context, "responses")
        return centrality(rows["prompt_id"].cast(pl.String).to_list(), vectors, self.min_responses)


def centrality(groups: list[str], vectors: object, min_responses: int = 3) -> np.ndarray:
    """Per row: mean cosine similarity to the other rows of its group, centred on the group's mean of that
    (rows of `vectors`, dense or scipy-sparse, are L2-normalised). NaN for groups under `min_responses`."""
    out = np.full(len(groups), np.nan)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        n = len(idx)
        if n < min_responses:
            continue
        block = vectors[idx]  # type: ignore[index]
        sim = block @ block.T
        sim = np.asarray(sim.todense() if hasattr(sim, "todense") else sim, dtype=np.float64)
        mean_to_others = (sim.sum(axis=1) - np.diag(sim)) / (n - 1)
        out[idx] = mean_to_others - mean_to_others.mean()
    return out


def _tfidf_vectors(texts: list[str]) -> object:
    """L2-normalised TF-IDF rows (sublinear term frequency), fitted on `texts`; all zero when no text has a word."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        sublinear_tf=True, stop_words=STOP_WORDS, token_pattern=r"(?u)\b[A-Za-z][A-Za-z']+\b"
    )
    try:
        return vec.fit_transform(texts)
    except ValueError:  # no words at all
        return csr_matrix((len(texts), 1))
