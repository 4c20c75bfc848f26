"""The SME rubric judge: the embedded domain's *true* preference, used only for evaluation.

The labeling functions in `prefscale.labeling` are noisy, partial heuristics of what SMEs want; this module
is what they actually want (all axes, with their own weights and task-dependent interactions). It must stay
out of the training path: nothing in candidates → labels → rewards → pairs → DPO imports it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from prefscale.data.domain import COMPANY

PREFERENCES: tuple[str, ...] = (
    "mentions_company",
    "list_format",
    "follows_workflow",
    "no_question_back",
    "no_sensitive_words",
    "no_heavy_adjectives",
    "thanks_customer",
)

_SENSITIVE = re.compile(
    r"\b(obviously|calm down|stupid|guarantee|lawsuit|your (own )?fault|not our fault|idiot|whatever)\b", re.I
)
_ADJECTIVES = {
    "amazing",
    "fantastic",
    "incredible",
    "wonderful",
    "brilliant",
    "outstanding",
    "superb",
    "remarkable",
    "extraordinary",
    "awesome",
    "spectacular",
    "magnificent",
}
_ACK = re.compile(r"\b(i understand|i am sorry|i am truly sorry|good question|sorry)\b", re.I)
_FOLLOWUP = re.compile(r"(let me know|reply here|we are here if|anything else i can help)", re.I)
_LIST_LINE = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\w", re.M)
_SIGNATURE = re.compile(rf"^\s*-\s*{COMPANY}", re.M)
_WORD = re.compile(r"[A-Za-z']+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.?!])\s+|\n", text) if s.strip()]


def detect(response: str) -> dict[str, bool]:
    """Whether `response` satisfies each SME preference (the precise, SME-side detectors)."""
    text = response or ""
    words = [w.lower() for w in _WORD.findall(text)]
    list_lines = [m.start() for m in _LIST_LINE.finditer(text) if not _SIGNATURE.match(text, m.start())]
    sentences = _sentences(text)
    questions = [s for s in sentences if s.endswith("?") and not _FOLLOWUP.search(s)]
    ack = _ACK.search(text)
    follow = None
    for m in _FOLLOWUP.finditer(text):
        follow = m
    steps_at = list_lines[0] if list_lines else _first_step_prose(text)
    workflow = bool(
        ack and follow and steps_at is not None and ack.start() < steps_at < follow.start() and not questions
    )
    n_adj = sum(w in _ADJECTIVES for w in words)
    return {
        "mentions_company": COMPANY.lower() in text.lower(),
        "list_format": len(list_lines) >= 2,
        "follows_workflow": workflow,
        "no_question_back": not questions,
        "no_sensitive_words": not _SENSITIVE.search(text),
        "no_heavy_adjectives": n_adj < 2,
        "thanks_customer": bool(re.search(r"\bthank(s| you)\b", text, re.I)),
    }


_PROSE_STEP = re.compile(r"\bfirst\b.*?\b(then|after that)\b", re.I | re.S)


def _first_step_prose(text: str) -> int | None:
    m = _PROSE_STEP.search(text)
    return m.start() if m else None


# Weights: how much the SMEs care, per task type where it differs.
_WEIGHTS = {
    "mentions_company": 0.8,
    "list_format": 1.0,
    "follows_workflow": 1.5,
    "no_question_back": 1.5,
    "no_sensitive_words": 2.0,
    "no_heavy_adjectives": 1.0,
    "thanks_customer": 1.0,
}
_TASK_WEIGHTS = {
    ("troubleshooting", "list_format"): 1.6,
    ("complaint", "list_format"): 0.5,
    ("complaint", "thanks_customer"): 1.5,
    ("complaint", "no_sensitive_words"): 3.0,
    ("billing", "follows_workflow"): 1.8,
}


def score(response: str, task_type: str, finished: bool = True) -> float:
    """The SMEs' overall judgement of one response (higher is better)."""
    d = detect(response)
    s = sum(_TASK_WEIGHTS.get((task_type, k), w) * d[k] for k, w in _WEIGHTS.items())
    # Interactions: a list without the surrounding workflow reads curt; thanks + sensitive words reads sarcastic.
    if d["list_format"] and not d["follows_workflow"]:
        s -= 0.3
    if d["thanks_customer"] and not d["no_sensitive_words"]:
        s -= 0.5
    n_words = len(_WORD.findall(response or ""))
    if n_words < 12:
        s -= 1.5
    if n_words > 110:
        s -= 0.02 * (n_words - 110)
    lines = [ln.strip().lower() for ln in (response or "").splitlines() if ln.strip()]
    s -= 1.0 * (len(lines) - len(set(lines)))  # repeated lines
    if not finished:
        s -= 3.0
    return s


def win_rate(
    model: Sequence[tuple[str, str, bool]],
    baseline: Sequence[tuple[str, str, bool]],
) -> tuple[float, int, int, int]:
    """Pairwise rubric comparison of aligned (response, task_type, finished) triples.

    Returns (win_rate, n_wins, n_losses, n_draws), a draw counting half.
    """
    if len(model) != len(baseline):
        raise ValueError(f"win_rate needs aligned samples: {len(model)} model vs {len(baseline)} baseline")
    wins = losses = draws = 0
    for (r1, t1, f1), (r2, _t2, f2) in zip(model, baseline, strict=True):
        a, b = score(r1, t1, f1), score(r2, t1, f2)
        if abs(a - b) < 1e-9:
            draws += 1
        elif a > b:
            wins += 1
        else:
            losses += 1
    n = wins + losses + draws
    return ((wins + 0.5 * draws) / n if n else float("nan")), wins, losses, draws
