"""`prefscale alpacaeval`: AlpacaEval leaderboard metrics from an annotations file in the official format."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

HELP = (
    "compute AlpacaEval metrics (win rate, standard error, counts, avg length, LC) from an annotations file"
)
DESCRIPTION = """\
Compute the AlpacaEval leaderboard metrics of one model from a file of judge annotations in the official
alpaca_eval format (a JSON array or JSON Lines, optionally gzipped): instruction, output_1 (the reference),
output_2 (the model), generator_2, preference (1 = reference preferred, 2 = model preferred, 1.5 = draw,
null = not parsed and left out of the preference metrics).

Scales, as in the official leaderboard.csv: win_rate, standard_error, discrete_win_rate and
length_controlled_winrate are percentages on the 0-100 scale; n_* are counts; avg_length is the mean number
of characters of the model outputs, truncated to an integer.

length_controlled_winrate is alpaca_eval's offline length_controlled_minimal GLM. The leaderboard's LC
(length_controlled_v1) also needs instruction difficulties from the Hugging Face Hub, so it differs.
Malformed files are rejected with the line and the reason (exit code 2)."""

_ROWS: tuple[tuple[str, str], ...] = (
    ("win_rate", "win rate vs the baseline, 0-100"),
    ("standard_error", "standard error of the win rate, 0-100"),
    ("n_wins", "model preferred (preference > 1.5)"),
    ("n_wins_base", "baseline preferred (preference < 1.5)"),
    ("n_draws", "draws (preference = 1.5)"),
    ("n_total", "parsed preferences"),
    ("n_unparsed", "null/NaN preferences (left out)"),
    ("discrete_win_rate", "win rate of the rounded preferences, 0-100"),
    ("avg_length", "mean characters of the model outputs"),
    ("length_controlled_winrate", "length-controlled win rate, 0-100"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_table(path: str, m: dict[str, Any]) -> None:
    import polars as pl

    from prefscale.report import text_table  # lazy: CLI start-up

    rows = [(k, _fmt(m[k]), note) for k, note in _ROWS if k in m]
    print(
        f"AlpacaEval metrics: {m['generator']} vs {m['baseline'] or '?'} "
        f"(annotator {m['annotator'] or '?'}; {m['n_annotations']} annotations in {path})"
    )
    print(text_table(pl.DataFrame(rows, schema=["metric", "value", "meaning"], orient="row")))
    if "lc_variant" in m:
        why = f": {m['lc_unavailable']}" if "lc_unavailable" in m else ""
        print(
            f"\nlength_controlled_winrate is alpaca_eval's offline {m['lc_variant']} GLM{why}; "
            "the leaderboard's LC (length_controlled_v1) needs Hub data and differs."
        )


def _run(args: argparse.Namespace) -> int:
    from prefscale.evaluation.alpaca_metrics import (
        AnnotationsError,
        compute_metrics,
        load_annotations,
    )  # lazy: CLI start-up

    try:
        annotations = load_annotations(args.annotations)
    except AnnotationsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metrics = compute_metrics(annotations, length_controlled=not args.no_lc)
    if args.json:
        print(json.dumps({"file": str(args.annotations), **metrics}, allow_nan=False))
    else:
        _print_table(str(args.annotations), metrics)
    return 0


def register(subparsers: Any) -> None:
    """Add the `alpacaeval` sub-command to the `prefscale` parser."""
    p = subparsers.add_parser(
        "alpacaeval",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--annotations",
        required=True,
        metavar="FILE",
        help="annotations file: JSON array or JSON Lines, optionally gzipped (e.g. annotations.json, *.jsonl.gz)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (one line) instead of a table")
    p.add_argument("--no-lc", action="store_true", help="skip the length-controlled GLM fit")
    p.set_defaults(func=_run)
