"""`prefscale` command line: recipes, the leaderboard, and the sub-commands in `prefscale.commands`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from prefscale.commands import COMMAND_MODULES
from prefscale.recipe import RecipeError, load_recipe
from prefscale.storage import default_home


def _cmd_recipe(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.action == "iterations":
        print(" ".join(str(i) for i in range(1, recipe.iterations + 1)))
    else:
        print(
            f"recipe {recipe.name!r} is valid: {recipe.iterations} iterations, "
            f"{recipe.generation.num_candidates} candidates per prompt, "
            f"{len(recipe.labeling.functions)} labeling functions, policy {recipe.policy.source}"
        )
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import duckdb

    from prefscale.report import text_table

    db = Path(args.home or default_home()) / "warehouse.duckdb"
    if not db.is_file():
        print(f"error: no warehouse at {db}; run `make run` first", file=sys.stderr)
        return 1
    with duckdb.connect(str(db), read_only=True) as con:
        # One row per (iteration, judge[, reference]); the AlpacaEval columns only where the warehouse has them
        # (a warehouse built before alpaca_eval_results existed does not).
        have = {r[0] for r in con.sql("select column_name from (describe eval_leaderboard)").fetchall()}
        extra = [
            f"round({c}, 3) as {c}" if c != "reference" else c
            for c in ("lc_win_rate", "standard_error", "reference")
            if c in have
        ]
        # the generator (base, dpo-iter<i>, dpo-iter<i>+bo<N>) where the warehouse has it: best-of-N rows sit
        # beside their plain checkpoint
        gen = ", generator" if "generator" in have else ""
        order = "iteration, judge" + (", reference" if "reference" in have else "") + gen
        board = con.sql(
            f"select iteration, judge{gen}, round(win_rate, 3) as win_rate, n_total, "
            "round(avg_length, 1) as avg_length, round(mean_adherence, 3) as mean_adherence, "
            "round(adherence_gain, 3) as adherence_gain, round(unfinished_rate, 3) as unfinished_rate"
            + "".join(f", {c}" for c in extra)
            + f" from eval_leaderboard order by {order}"
        ).pl()
        adh_cols = {r[0] for r in con.sql("select column_name from (describe eval_adherence)").fetchall()}
        if "generator" in adh_cols:
            adh = con.sql(
                "pivot (select generator, preference, round(rate, 2) as rate from eval_adherence) "
                "on generator using first(rate) order by preference"
            ).pl()
        else:
            adh = con.sql(
                "pivot (select iteration, preference, round(rate, 2) as rate from eval_adherence) "
                "on iteration using first(rate) order by preference"
            ).pl()
            adh = adh.rename({c: f"iter {c}" for c in adh.columns if c != "preference"})
    print("eval_leaderboard (held-out prompts; win rate vs the base by the SME rubric judge)")
    print(text_table(board))
    judges = sorted(set(board["judge"].to_list()) - {"sme_rubric"})
    if judges:
        print(
            f"(also judged by {', '.join(judges)} in alpaca_eval_results: win rates on 0-1 against each row's "
            "reference; lc_win_rate = alpaca_eval's length_controlled_minimal)"
        )
    if "generator" in board.columns and board["generator"].str.contains(r"\+bo\d+$").any():
        print("(dpo-iter<i>+bo<N>: the checkpoint with best-of-N at inference, asset best_of_n)")
    print()
    by = "generator" if "generator" in adh_cols else "iteration"
    print(f"eval_adherence (share of held-out responses satisfying each SME preference, by {by})")
    print(text_table(adh))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prefscale", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("recipe", help="validate a recipe or list its iterations")
    r.add_argument("action", choices=["validate", "iterations"])
    r.add_argument("recipe", help="a recipe name from recipes/ or a YAML path")
    r.set_defaults(func=_cmd_recipe)
    lb = sub.add_parser("leaderboard", help="print eval_leaderboard and eval_adherence from the warehouse")
    lb.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    lb.set_defaults(func=_cmd_leaderboard)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
