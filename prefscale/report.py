"""Small formatting helpers for summaries shown in the UI and printed by the CLI."""

from __future__ import annotations

import json
from typing import Any

import polars as pl


def _cell(v: object, digits: int, markdown: bool = True) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    text = str(v).replace("\n", " ⏎ ")
    return text.replace("|", "\\|") if markdown else text


def markdown_table(df: pl.DataFrame, digits: int = 3, max_rows: int = 50) -> str:
    """A GitHub-flavoured markdown table of (the first `max_rows` rows of) `df`."""
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_cell(v, digits) for v in r) + " |" for r in df.head(max_rows).iter_rows()]
    more = [f"\n_{df.height - max_rows} more rows_"] if df.height > max_rows else []
    return "\n".join([head, sep, *rows, *more])


def text_table(df: pl.DataFrame, digits: int = 3) -> str:
    """A plain fixed-width table for terminals."""
    cells = [[_cell(v, digits, markdown=False) for v in r] for r in df.iter_rows()]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(df.columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line(df.columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def print_bench_result(result: Any, as_json: bool) -> int:
    """Print a benchmark's result (`to_dict()` as one JSON line, or its `summary_lines()`); the exit code: 0 when
    its own check passed (`result.ok`), else 1."""
    if as_json:
        print(json.dumps(result.to_dict()), flush=True)
    else:
        print("\n".join(result.summary_lines()), flush=True)
    return 0 if result.ok else 1
