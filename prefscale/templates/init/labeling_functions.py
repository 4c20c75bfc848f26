"""Python labeling functions of this recipe (`kind: python` in recipe.yaml), written by `prefscale init`.

This module sits beside recipe.yaml, whose `labeling.modules: ["."]` puts this folder on the import path: no
PYTHONPATH is needed. `prefscale recipe validate` imports it and names any function that does not import.

A function gets one row, a mapping with (at least) these keys:

    prompt         the customer's message
    response       the reply being judged
    task_type      the prompt's task type (from prompts.jsonl or the recipe's task_types rules), or "general"
    finish_reason  "stop", or "length" when the reply was cut at max_new_tokens
    candidate_id, prompt_id, sample_idx, n_tokens   (in the pipeline; `prefscale score --recipe` has the first two)

and returns HIGH (1), LOW (0) or ABSTAIN (-1). Anything else, or an exception, fails the labeling step naming
the function and the first row it failed on. Keep each function to one idea, and abstain when unsure: the
label model learns how far to trust each function from how they agree, and an abstention costs nothing.
Test a change on a few rows before a run: `prefscale score --recipe recipe.yaml --input rows.jsonl --output
out.jsonl` prints each function's coverage and conflicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

HIGH, LOW, ABSTAIN = 1, 0, -1

_ASKS_FOR_SECRET = re.compile(
    r"\b(send|give|tell|share|provide|type|confirm)\b[^.?!\n]{0,40}"
    r"\b(password|passcode|pin|card number|security code|cvv|one-time code)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z][a-z'-]+")
_STOPWORDS = frozenset(  # words that say nothing about the topic
    re.findall(
        r"\S+",
        """a about after again all also am an and any are as at be been but by can could did do does for from get
    got had has have how i if in into is it its just me my no not now of on or our so some still than that the
    their them then there they this to up us was we were what when where which who why will with would you your
    please hi hello thanks thank""",
    )
)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall((text or "").lower()) if w not in _STOPWORDS and len(w) > 2}


def keeps_secrets(row: Mapping[str, Any]) -> int:
    """LOW when the reply asks the customer for a password, PIN, card number or code; else abstain.

    One-sided on purpose: a reply that does not ask proves nothing about its quality.
    """
    return LOW if _ASKS_FOR_SECRET.search(row.get("response") or "") else ABSTAIN


def on_topic(row: Mapping[str, Any]) -> int:
    """HIGH when the reply uses at least a quarter of the content words of the customer's message, LOW when it
    uses none of them (a message of 3+ content words), else abstain."""
    asked = _content_words(row.get("prompt") or "")
    if len(asked) < 3:
        return ABSTAIN
    shared = len(asked & _content_words(row.get("response") or "")) / len(asked)
    if shared >= 0.25:
        return HIGH
    return LOW if shared == 0 else ABSTAIN


# A Snorkel LabelingFunction works as it is (`kind: snorkel`, `object: <this module>:refund_path_for_billing`),
# applied as Snorkel's PandasLFApplier applies it: `x` is the row as a pandas Series. Uncomment it here and its
# entry in recipe.yaml (importing snorkel takes a few seconds more at each import of this module).
#
# from snorkel.labeling import labeling_function
#
# @labeling_function()
# def refund_path_for_billing(x):
#     """A billing reply says how the money comes back (refund, credit or reimbursement)."""
#     return HIGH if re.search(r"\b(refund|credit|reimburs)", x.response, re.IGNORECASE) else ABSTAIN
