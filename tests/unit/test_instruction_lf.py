"""`kind: instruction`: a constraint the prompt states (items, word or sentence limit, yes-no, code), checked in the
reply; the vectorised polars vote and `row_vote` agree row for row."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.instruction_kind import CHECKS, InstructionLF
from prefscale.labeling.registry import LF_KINDS
from prefscale.labeling.votes import ABSTAIN, HIGH, LOW

CASES = [
    # (prompt, response, {check: "obeyed" | "broken" | None (no such constraint: abstain)})
    (
        "Give me three tips for sleeping better.",
        "1. Dim the lights.\n2. No screens.\n3. Same bedtime.",
        {"item_count": "obeyed"},
    ),
    (
        "List 5 fun ideas for a birthday party.",
        "- Karaoke\n- Treasure hunt\n- Movie night",
        {"item_count": "broken"},
    ),
    (
        "List 5 fun ideas for a birthday party.",
        "Karaoke, a treasure hunt or a movie night.",
        {"item_count": None},
    ),
    ("Suggest two names for a cat.", "1. Miso\n   - short and sweet\n2. Pixel", {"item_count": "obeyed"}),
    (
        "Describe Paris in no more than 10 words.",
        "City of light, art, cafés and the Seine.",
        {"word_limit": "obeyed"},
    ),
    ("Describe Paris in under ten words.", " ".join(["word"] * 13), {"word_limit": "broken"}),
    (
        "Describe Paris in 10 words or less.",
        " ".join(["word"] * 11),
        {"word_limit": None},
    ),  # 11 ≤ 1.2·10: neither
    (
        "Summarize the plot in one sentence.",
        "A boy finds a dragon and saves the town.",
        {"sentence_limit": "obeyed"},
    ),
    (
        "Summarize the plot in one sentence.",
        "A boy finds a dragon. He saves the town",
        {"sentence_limit": "broken"},
    ),
    ("Summarize it in two sentences.", "First part. Second part! Third part?", {"sentence_limit": "broken"}),
    ("Is the Earth round?", "Yes. It is an oblate spheroid.", {"yes_no": "obeyed"}),
    ("Is the Earth round?", "The Earth is an oblate spheroid.", {"yes_no": "broken"}),
    ("Is the Earth round? Explain why in detail.", "The Earth is an oblate spheroid.", {"yes_no": None}),
    (
        "Write a Python function that reverses a string.",
        "```python\ndef rev(s):\n    return s[::-1]\n```",
        {"code": "obeyed"},
    ),
    ("Write a Python function that reverses a string.", "Slice it with a step of -1.", {"code": "broken"}),
    ("Explain how photosynthesis works.", "Plants turn light into sugar.", dict.fromkeys(CHECKS)),
]


def _rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i}" for i in range(len(CASES))],
            "prompt": [c[0] for c in CASES],
            "response": [c[1] for c in CASES],
            "task_type": ["general"] * len(CASES),
        }
    )


def _lfs() -> list[InstructionLF]:
    return [
        InstructionLF(
            name=f"{c}_{w}", check=c, when=w, vote="high" if w == "obeyed" else "low", description="x"
        )
        for c in CHECKS
        for w in ("obeyed", "broken")
    ]


def test_each_check_fires_where_the_reply_obeys_or_breaks_the_constraint():
    votes = apply_lfs(_rows(), _lfs())
    for i, (prompt, _, expected) in enumerate(CASES):
        for check, outcome in expected.items():
            got = {w: votes[f"{check}_{w}"][i] for w in ("obeyed", "broken")}
            want = {
                "obeyed": HIGH if outcome == "obeyed" else ABSTAIN,
                "broken": LOW if outcome == "broken" else ABSTAIN,
            }
            assert got == want, (prompt, check, got)


def test_row_vote_matches_the_vectorised_vote():
    rows, lfs = _rows(), _lfs()
    votes = apply_lfs(rows, lfs)
    for lf in lfs:
        assert [lf.row_vote(r) for r in rows.iter_rows(named=True)] == votes[lf.name].to_list(), lf.name


def test_declaration():
    assert "instruction" in LF_KINDS
    assert InstructionLF(
        name="x", check="code", when="broken", vote="low", description="d"
    ).input_columns() == {
        "prompt",
        "response",
    }
    with pytest.raises(ValidationError, match="check"):
        InstructionLF(name="x", check="json", when="broken", vote="low", description="d")
    with pytest.raises(ValidationError, match=r"tolerance is only used by check 'word_limit', not 'code'"):
        InstructionLF(name="x", check="code", when="broken", vote="low", description="d", tolerance=1.5)
    with pytest.raises(ValidationError, match="tolerance"):
        InstructionLF(name="x", check="word_limit", when="broken", vote="low", description="d", tolerance=0.5)
    null = {"candidate_id": "n", "prompt": None, "response": "1. a", "task_type": "general"}
    assert (
        InstructionLF(name="x", check="item_count", when="broken", vote="low", description="d").row_vote(null)
        == -1
    )
