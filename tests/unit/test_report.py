from __future__ import annotations

import polars as pl

from prefscale.report import markdown_table, text_table


def _df():
    return pl.DataFrame(
        {"name": ["alpha", "b", "gamma ray"], "score": [0.12345, 1.0, 2.5], "n": [1, 22, 333]}
    )


# --- markdown_table -----------------------------------------------------------------------------------------


def test_markdown_table_structure():
    lines = markdown_table(_df()).split("\n")
    assert lines == [
        "| name | score | n |",
        "|---|---|---|",
        "| alpha | 0.123 | 1 |",
        "| b | 1.000 | 22 |",
        "| gamma ray | 2.500 | 333 |",
    ]


def test_markdown_table_digits():
    df = pl.DataFrame({"x": [3.14159, 2.0]})
    assert markdown_table(df, digits=1).split("\n")[2:] == ["| 3.1 |", "| 2.0 |"]
    assert markdown_table(df, digits=4).split("\n")[2:] == ["| 3.1416 |", "| 2.0000 |"]
    assert markdown_table(df, digits=0).split("\n")[2:] == ["| 3 |", "| 2 |"]


def test_markdown_table_ints_and_strings_not_float_formatted():
    df = pl.DataFrame({"i": [7], "s": ["0.5"], "b": [True]})
    assert markdown_table(df).split("\n")[2] == "| 7 | 0.5 | True |"


def test_markdown_table_escapes_pipes_and_newlines():
    df = pl.DataFrame({"text": ["a|b", "line1\nline2", "x||y\n"]})
    rows = markdown_table(df).split("\n")[2:]
    assert rows == ["| a\\|b |", "| line1 ⏎ line2 |", "| x\\|\\|y ⏎  |"]
    # every data row still has exactly the two outer column separators
    for r in rows:
        assert r.replace("\\|", "").count("|") == 2


def test_markdown_table_max_rows_truncates_with_note():
    df = pl.DataFrame({"i": list(range(10))})
    out = markdown_table(df, max_rows=3)
    lines = out.split("\n")
    assert lines[:5] == ["| i |", "|---|", "| 0 |", "| 1 |", "| 2 |"]
    assert lines[5:] == ["", "_7 more rows_"]
    assert "| 3 |" not in out


def test_markdown_table_no_note_when_within_limit():
    df = pl.DataFrame({"i": list(range(3))})
    assert "more rows" not in markdown_table(df, max_rows=3)
    assert len(markdown_table(df, max_rows=3).split("\n")) == 5


def test_markdown_table_default_max_rows_is_50():
    df = pl.DataFrame({"i": list(range(53))})
    lines = markdown_table(df).split("\n")
    assert lines[-1] == "_3 more rows_"
    assert lines[2 + 49] == "| 49 |"
    assert lines[2 + 50] == ""


def test_markdown_table_empty_frame_has_header_only():
    df = pl.DataFrame({"a": [], "b": []}, schema={"a": pl.Int64, "b": pl.String})
    assert markdown_table(df) == "| a | b |\n|---|---|"


# --- text_table ---------------------------------------------------------------------------------------------


def test_text_table_aligns_columns():
    out = text_table(_df())
    lines = out.split("\n")
    assert lines == [
        "name       score  n  ",
        "---------  -----  ---",
        "alpha      0.123  1  ",
        "b          1.000  22 ",
        "gamma ray  2.500  333",
    ]
    # every line has the same width and each column starts at the same offset
    assert len({len(line) for line in lines}) == 1
    for line in lines:
        assert line[11] != " " and line[18] != " "


def test_text_table_header_wider_than_values():
    df = pl.DataFrame({"a_long_header": [1], "x": [12345]})
    assert text_table(df).split("\n") == [
        "a_long_header  x    ",
        "-------------  -----",
        "1              12345",
    ]


def test_text_table_digits():
    df = pl.DataFrame({"v": [0.5, 10.26]})
    assert text_table(df, digits=1).split("\n") == ["v   ", "----", "0.5 ", "10.3"]


def test_text_table_empty_frame():
    df = pl.DataFrame({"col": [], "x": []}, schema={"col": pl.Int64, "x": pl.Float64})
    assert text_table(df) == "col  x\n---  -"
