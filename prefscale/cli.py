"""`prefscale` command line: recipes, the leaderboard, and the sub-commands in `prefscale.commands`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from prefscale.commands import COMMAND_MODULES
from prefscale.config.base import RecipeError
from prefscale.config.recipe import (
    RECIPES_DIR,
    Recipe,
    iteration_assets,
    load_recipe,
    recipe_input_problems,
    resolve_recipe_path,
)
from prefscale.storage import default_home


def recipe_summary(recipe: Recipe) -> str:
    """One line: what a valid recipe will run."""
    policy = recipe.policy.source
    if recipe.policy.source == "pretrained":
        policy += f" {recipe.policy.model}"
    elif recipe.policy.gguf is not None:
        g = recipe.policy.gguf
        policy += f" {g.path or f'{g.package}/{g.file}'}"
    data = recipe.data.source
    if recipe.data.source == "file":
        data += f" {recipe.data.path}"
    elif recipe.data.source == "hf_dataset":
        data += f" {recipe.data.dataset}[{recipe.data.split}].{recipe.data.column}"
    its = recipe.iterations
    return (
        f"recipe {recipe.name!r} is valid: {its} iteration{'s' if its != 1 else ''}, "
        f"{recipe.generation.num_candidates} candidates per prompt, "
        f"{len(recipe.labeling.all_functions)} labeling functions"
        f"{f' ({n} model-backed)' if (n := len(recipe.labeling.model_functions)) else ''}, "
        f"policy {policy}, data {data} "
        f"({recipe.data.prompts_per_iteration} prompts per iteration, {recipe.data.heldout_size} held out), "
        f"reward {'+'.join(recipe.reward.names)}, pairs {recipe.pairs.strategy}, "
        f"DPO {'LoRA' if recipe.dpo.lora else 'full'} {recipe.dpo.loss_type} beta {recipe.dpo.beta}, "
        f"judges {'+'.join(recipe.evaluation.all_judges)} vs {recipe.evaluation.reference}"
    )


def validate_recipe(name_or_path: str) -> tuple[Path, Recipe]:
    """Load a recipe and check the local files it reads; `RecipeError` naming every bad field otherwise.

    Nothing here touches the network: hub ids are accepted as they are written.
    """
    path = resolve_recipe_path(name_or_path)
    recipe = load_recipe(str(path))
    problems = recipe_input_problems(recipe)
    if problems:
        raise RecipeError("\n".join([f"invalid recipe {path}:", *(f"  - {p}" for p in problems)]))
    return path, recipe


def _cmd_recipe(args: argparse.Namespace) -> int:
    if args.all and args.recipe:
        print("error: give a recipe or --all, not both", file=sys.stderr)
        return 2
    if args.action in ("iterations", "iteration-assets"):
        if args.all or not args.recipe:
            print(f"error: `prefscale recipe {args.action}` needs one recipe", file=sys.stderr)
            return 2
        recipe = load_recipe(args.recipe)
        if args.action == "iterations":
            print(" ".join(str(i) for i in range(1, recipe.iterations + 1)))
        else:
            print(",".join(iteration_assets(recipe)))
        return 0
    if args.all:
        names = [str(p) for p in sorted(RECIPES_DIR.glob("*.yaml"))]
        if not names:
            print(f"error: no recipes in {RECIPES_DIR}", file=sys.stderr)
            return 2
    elif args.recipe:
        names = [args.recipe]
    else:
        print("error: give a recipe name or path, or --all", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            _, recipe = validate_recipe(name)
        except RecipeError as e:
            failed += 1
            print(f"error: {e}", file=sys.stderr)
            continue
        print(recipe_summary(recipe))
    if failed and len(names) > 1:
        print(f"{failed} of {len(names)} recipes are invalid", file=sys.stderr)
    return 2 if failed else 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    import duckdb

    from prefscale.report import text_table  # lazy: CLI start-up

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
    r = sub.add_parser(
        "recipe",
        help="validate recipes (schema + the local files they read; no network), or list a recipe's iterations "
        "or the assets one iteration materializes",
    )
    r.add_argument("action", choices=["validate", "iterations", "iteration-assets"])
    r.add_argument("recipe", nargs="?", help="a recipe name from recipes/ or a YAML path")
    r.add_argument("--all", action="store_true", help="validate every recipes/*.yaml")
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
