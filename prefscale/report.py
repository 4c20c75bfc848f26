"""Small formatting helpers for summaries shown in the UI and printed by the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

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


# --- plots small enough to show inline in the Dagster UI ------------------------------------------------------
# Dagster (1.13) has no image metadata type; its UI renders a markdown metadata value in place only when it is
# shorter than 1000 characters, and behind a "[Show Markdown]" button otherwise, where a base64 PNG always is.
# A tiny SVG chart (a percent-encoded data URI) fits: the assets show it first, as a preview of the full PNG.
INLINE_MD_LIMIT = 1000
PALETTE = (("#1f77b4", "blue"), ("#ff7f0e", "orange"), ("#2ca02c", "green"), ("#d62728", "red"))
_W, _H, _PAD = 240, 72, 4
_URI_SAFE = "=:/',.-"  # kept as they are in the data URI; spaces, <, >, #, ( and ) are percent-encoded


def svg_markdown(svg: str, alt: str) -> str:
    """`svg` as a markdown image (a percent-encoded `data:image/svg+xml` URI)."""
    return f"![{alt}](data:image/svg+xml,{quote(svg, safe=_URI_SAFE)})"


def _svg(body: str) -> str:
    frame = "<rect width='100%' height='100%' fill='none' stroke='#ccc'/>"
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}'>{frame}{body}</svg>"


def _xy(x: float, y: float, x0: float, x1: float, y0: float, y1: float) -> str:
    px = _PAD + (x - x0) / ((x1 - x0) or 1.0) * (_W - 2 * _PAD)
    py = _H - _PAD - (y - y0) / ((y1 - y0) or 1.0) * (_H - 2 * _PAD)
    return f"{px:.0f},{py:.0f}"


def _fits(md: str) -> str:
    return md if len(md) < INLINE_MD_LIMIT else ""


def line_chart_markdown(
    series: Mapping[str, Sequence[tuple[float, float]]],
    alt: str,
    y_range: tuple[float, float] | None = None,
    hline: float | None = None,
) -> str:
    """A tiny line chart, one coloured polyline per series (at most `len(PALETTE)`), as inline markdown whose
    caption names each series' colour; "" when there is nothing to draw or it would not fit `INLINE_MD_LIMIT`."""
    if len(series) > len(PALETTE):
        return ""
    colors = PALETTE[: len(series)]
    drawn = [(name, sorted(pts), c) for (name, pts), c in zip(series.items(), colors, strict=True) if pts]
    if not drawn:
        return ""
    xs = [x for _, pts, _ in drawn for x, _ in pts]
    ys = [y for _, pts, _ in drawn for _, y in pts]
    box = (min(xs), max(xs), *(y_range or (min(ys), max(ys))))
    body = ""
    if hline is not None:
        ends = f"{_xy(box[0], hline, *box)},{_xy(box[1], hline, *box)}"
        body += f"<polyline points='{ends}' stroke='#999' stroke-dasharray='3'/>"
    for _, pts, (hex_color, _) in drawn:
        coords = ",".join(_xy(x, y, *box) for x, y in (pts * 2 if len(pts) == 1 else pts))
        body += f"<polyline points='{coords}' fill='none' stroke='{hex_color}' stroke-width='3' stroke-linecap='round'/>"
    caption = ", ".join(f"{name} ({color_name})" for name, _, (_, color_name) in drawn)
    return _fits(f"{svg_markdown(_svg(body), alt)}\n\n{alt}: {caption}")


def histogram_markdown(values: Sequence[float | None], alt: str, bins: int = 24) -> str:
    """A tiny histogram (a filled step outline) of the finite `values` as inline markdown, its count and range in
    the caption; "" when there is no finite value or it would not fit `INLINE_MD_LIMIT`."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    box = (0, bins, 0, max(counts))
    steps = [_xy(k + dk, c, *box) for k, c in enumerate(counts) for dk in (0, 1)]
    outline = ",".join([_xy(0, 0, *box), *steps, _xy(bins, 0, *box)])
    body = f"<polyline points='{outline}' fill='#1f77b4' fill-opacity='.35' stroke='#1f77b4'/>"
    return _fits(f"{svg_markdown(_svg(body), alt)}\n\n{alt}: {len(vals)} values from {lo:.3g} to {hi:.3g}")
