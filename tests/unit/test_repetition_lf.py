"""The `repetition` labeling function: a reply that repeats its own lines."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from prefscale.labeling.apply import apply_lfs
from prefscale.labeling.pattern_kinds import RepetitionLF
from prefscale.labeling.votes import ABSTAIN, LOW

CLOSING = "Let me know if you have any other questions!"
RESPONSES = [
    f"Reset the router first.\n{CLOSING}\n{CLOSING}",  # 1 of its 3 lines repeats an earlier one
    f"Reset the router and wait a minute.\nThen sign in again with your account.\n{CLOSING}",
    f"Step one: open the settings panel.\n  STEP ONE: OPEN THE SETTINGS PANEL.  \n{CLOSING}\nDone.",
    "ok\nok\nok\nok",  # every line is under min_line_chars: nothing compared
    "",
]


def _rows() -> pl.DataFrame:
    n = len(RESPONSES)
    return pl.DataFrame(
        {"candidate_id": [str(i) for i in range(n)], "response": RESPONSES, "task_type": [None] * n}
    )


def test_repetition_fires_on_repeated_lines_vectorised_and_row_wise_alike():
    lf = RepetitionLF(name="repeats_itself", vote="low", min_repeated_share=0.3)
    votes = apply_lfs(_rows(), [lf])["repeats_itself"].to_list()
    # a third of the compared lines repeat in the first and third replies ("Done." is too short to compare)
    assert votes == [LOW, ABSTAIN, LOW, ABSTAIN, ABSTAIN]
    assert [lf.row_vote(r) for r in _rows().iter_rows(named=True)] == votes
    stricter = RepetitionLF(name="r", vote="low", min_repeated_share=0.5)
    assert apply_lfs(_rows(), [stricter])["r"].to_list() == [ABSTAIN] * 5


def test_bad_repetition_settings_are_named():
    with pytest.raises(ValidationError, match="min_repeated_share"):
        RepetitionLF(name="r", vote="low", min_repeated_share=0)
    with pytest.raises(ValidationError, match="min_line_chars"):
        RepetitionLF(name="r", vote="low", min_line_chars=0)
