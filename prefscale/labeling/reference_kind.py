"""The `reference` labeling function: how close a response is to a reference answer for its prompt.

Reference-based metrics (BLEU, ROUGE, BERTScore; the reference-guided grading of MT-Bench) score an answer by what
it shares with a known good one. Where a team has such answers (an SME's gold reply, a knowledge-base article,
the `reference_output` of an evaluation set, a stronger model's answer) this is the one cheap signal of *content*:
a short answer that says what the reference says scores high, a long one that talks around it scores low, so it
sees past length where text patterns cannot. Rows without a reference (no `reference` column, or a null or blank
one) abstain.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from prefscale.labeling.consensus_kind import _tfidf_vectors
from prefscale.labeling.model_kinds import ModelContext, _CosineLF

REFERENCE_COLUMN = "reference"
WORD = re.compile(r"(?u)\b[A-Za-z][A-Za-z']+\b")  # the TF-IDF backend's tokens


class ReferenceLF(_CosineLF):
    """How close the response is to the row's reference answer (column `reference`), by `measure`: the cosine
    similarity (`tfidf`, fitted on the batch's responses and references with English stop words left out, or
    `embedding`, which mean-pools `model`) or the recall of the reference's content words. At least `high_above`
    votes high, at most `low_below` votes low; a row without a reference abstains."""

    kind: Literal["reference"] = Field(
        default="reference",
        description="reference: how close a response is to the reference answer of its prompt (column "
        "`reference`; rows without one abstain)",
    )

    measure: Literal["cosine", "recall"] = Field(
        default="cosine",
        description="cosine: the similarity of response and reference (TF-IDF or embeddings); recall: the share "
        "of the reference's distinct content words (stop words out) that the response uses (tfidf backend only)",
    )

    @property
    def required_columns(self) -> set[str]:
        return {"response"}

    @model_validator(mode="after")
    def _measure(self) -> ReferenceLF:
        if self.measure == "recall" and self.backend != "tfidf":
            raise ValueError("measure recall counts words: it needs backend tfidf")
        return self

    def scores(self, rows: pl.DataFrame, context: ModelContext) -> np.ndarray:
        responses = rows["response"].fill_null("").to_list()
        refs = rows[REFERENCE_COLUMN].to_list() if REFERENCE_COLUMN in rows.columns else [None] * rows.height
        if self.measure == "recall":
            return reference_recall(responses, refs)
        return reference_similarity(
            responses,
            refs,
            embed=None
            if self.backend == "tfidf"
            else lambda texts, what: self._embed_texts(texts, context, what),
        )


def reference_recall(responses: list[str], references: list[str | None]) -> np.ndarray:
    """Per row: the share of the reference's distinct content words (the TF-IDF tokens, English stop words out)
    that the response uses; NaN where the reference is missing or has no content word."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    def content_words(text: str) -> set[str]:
        return {w for w in (m.lower() for m in WORD.findall(text)) if w not in ENGLISH_STOP_WORDS}

    out = np.full(len(responses), np.nan)
    for i, (response, reference) in enumerate(zip(responses, references, strict=True)):
        wanted = content_words(reference) if reference else set()
        if wanted:
            out[i] = len(wanted & content_words(response)) / len(wanted)
    return out


def reference_similarity(
    responses: list[str],
    references: list[str | None],
    embed: Callable[[list[str], str], np.ndarray] | None = None,
) -> np.ndarray:
    """Per row: the cosine of the response and its reference (TF-IDF fitted on both, stop words out, unless
    `embed(texts, what)` gives unit vectors); NaN where the reference is missing or blank."""
    out = np.full(len(responses), np.nan)
    have = [i for i, r in enumerate(references) if r is not None and r.strip()]
    if not have:
        return out
    resp = [responses[i] for i in have]
    refs = [str(references[i]) for i in have]
    if embed is None:
        distinct = sorted(set(refs))
        vectors = _tfidf_vectors(resp + distinct)
        at = {r: len(resp) + k for k, r in enumerate(distinct)}
        a = vectors[: len(resp)]  # type: ignore[index]
        b = vectors[[at[r] for r in refs]]  # type: ignore[index]
        sims = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    else:
        sims = (np.asarray(embed(resp, "responses")) * np.asarray(embed(refs, "references"))).sum(axis=1)
    out[have] = sims
    return out
