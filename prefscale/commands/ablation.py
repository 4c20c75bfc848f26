"""`prefscale ablation pairs`: hard-negative vs random pairs (or any strategies), same base, seed and budget."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the alignment loop in-process (no Dagster) once per pair strategy, every arm from the same base policy with
the recipe's seeds, prompts, candidates and DPO settings, and print each arm's held-out leaderboard (win rate
against the base by the SME rubric judge, adherence, length). Iteration 0 is the base. See prefscale.ablation."""


def _run(args: argparse.Namespace) -> int:
    import polars as pl

    from prefscale.compute import resolve_compute  # lazy: CLI start-up
    from prefscale.config.recipe import load_recipe  # lazy: CLI start-up
    from prefscale.report import text_table  # lazy: CLI start-up
    from prefscale.tools.ablation import run_pair_ablation  # lazy: CLI start-up

    overrides = json.loads(args.overrides) if args.overrides else None
    recipe = load_recipe(args.recipe, overrides)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="prefscale-ablation-"))
    try:
        result = run_pair_ablation(
            recipe,
            strategies,
            work_dir=work,
            compute=resolve_compute(args.device, dtype=recipe.policy.dtype),
            iterations=args.iterations,
            log=lambda m: print(f"[ablation] {m}", file=sys.stderr, flush=True),
            keep=args.keep,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    board = result.leaderboard
    if args.output:
        board.write_csv(args.output)
    if args.json:
        print(json.dumps({"seconds": result.seconds, "rows": board.to_dicts()}))
        return 0
    print(
        f"pair-strategy ablation, recipe {recipe.name!r} (seed {recipe.seed}), {result.seconds:.0f} s; "
        "win rate vs the base by the SME rubric judge"
    )
    print(text_table(board.with_columns(pl.col(pl.Float64).round(3))))
    return 0


def register(subparsers: Any) -> None:
    """Add `ablation pairs` to the `prefscale` parser."""
    p = subparsers.add_parser("ablation", help="ablations of the alignment loop (in-process, no Dagster)")
    sub = p.add_subparsers(dest="ablation", required=True)
    a = sub.add_parser(
        "pairs",
        help="compare pair strategies (default best_vs_worst vs random_pair)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--recipe", default="embedded", help="recipe name or YAML path (default embedded)")
    a.add_argument("--overrides", help="JSON merged into the recipe (e.g. a smaller configuration)")
    a.add_argument(
        "--strategies",
        default="best_vs_worst,random_pair",
        help="comma-separated pair strategies (default best_vs_worst,random_pair)",
    )
    a.add_argument("--iterations", type=int, help="iterations per arm (default: the recipe's)")
    a.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    a.add_argument("--work-dir", help="where models are written (default: a temporary folder)")
    a.add_argument("--keep", action="store_true", help="keep the work folder (policies, checkpoints)")
    a.add_argument("--output", metavar="CSV", help="also write the leaderboard as CSV")
    a.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a.set_defaults(func=_run)
