"""`prefscale score`: add a `reward` to every (prompt, response) row of a JSON Lines file; or measure a reward
against AlpacaEval's judge (`--eval-alpaca-pairs DIR`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefscale.rewards import registry as reward_registry

HELP = "score (prompt, response) rows with a reward, or measure a reward on AlpacaEval judge annotations"
DESCRIPTION = """\
Scoring: read JSON Lines rows with string fields `prompt` and `response` and write the same rows (every other
field and the key order kept) with a float `reward`, higher is better. The default source, label_model, needs no
training data: a generic LF pack (recipes/lf_packs/helpfulness.yaml) votes on every row and Snorkel's label
model, fitted on the input's own votes, gives P(high quality); rows it cannot tell apart are ordered by length.
A row's optional string `reference` (a known good answer to its prompt) feeds the pack's reference functions,
which abstain on rows without one.
reward_model scores with a trained reward model folder (--model), pairrm with a PairRM ranker (--model: hub id,
ranker folder or `tiny`), comparing the rows that share a prompt. Bad rows (invalid JSON, a missing or
non-string prompt/response) are listed by line number and nothing is written (exit code 2); the output is
written to a temporary file and renamed into place.

With --recipe RECIPE (a name in recipes/ or a YAML path; instead of --lf-pack) the recipe's own labeling
functions vote and its label model (its settings and seed) gives P(high), the pipeline's label_model reward.
Each row's task type, which task-scoped functions read, is the row's own `task_type` if it has one, else that
of the same prompt in the recipe's prompts (file or embedded), else the recipe's labeling.task_types rules, then
its task_classifier. Model-backed functions on `model: base_policy` need --base-policy DIR (the recipe's
base_policy artifact folder); without it the command fails naming them, unless --skip-model-lfs leaves every
model-backed function out. A per-function table (coverage, conflicts, estimated accuracy) follows the summary.

Measuring (--eval-alpaca-pairs DIR): DIR holds AlpacaEval annotation files of several models against the same
reference. For each instruction, two models whose judge preferences differ by at least --min-gap form a pair
(the judge prefers the one with the higher preference). Every answer is scored with the chosen source, and the
command reports how often the reward prefers the judge's winner, next to "the longer answer wins", overall and
on two fixed halves of the instructions (dev: the half the LF pack was tuned on; holdout: the other). Length-aware
columns: shorter_won (the pairs where the judge preferred the shorter answer) and the reward's agreement on them;
length_balanced (the mean of its agreement where the longer and where the shorter answer won: "longer wins"
scores 0.5); length_controlled (the agreement of the reward less its linear trend in log length).

With --model-holdout [LF] (4 or more models' files, the label_model source): a model-level holdout. For each
pair of held-out models, LF's thresholds (high at >= t, low at <= -t, or LF left out; default LF: consensus)
are chosen on the other models' pairs by length-balanced agreement, and the reward is scored on the pairs
between the held-out models only; the pooled result covers every pair once. --holdout-optional LF,LF also
chooses there which of those functions to keep.

Both read each answer's reference answer (the annotation's output_1, which the judge compared it with) for the
pack's `reference` functions; --no-references scores without them (those functions abstain)."""


def _print_eval(r: dict[str, Any]) -> None:
    import polars as pl

    from prefscale.report import text_table  # lazy: CLI start-up

    rows = []
    for split in ("all", "dev", "holdout"):
        d = r[split]
        rows.append(
            (
                split,
                d["pairs"],
                f"{d['reward_accuracy']:.3f}",
                d["reward_ties"],
                f"{d['longer_accuracy']:.3f}",
                d["shorter_won_pairs"],
                f"{d['reward_accuracy_shorter_won']:.3f}",
                f"{d['length_balanced_accuracy']:.3f}",
                f"{d['lc_reward_accuracy']:.3f}",
                d["only_reward_right"],
                d["only_longer_right"],
                f"{d['sign_test_p']:.3f}",
            )
        )
    print(
        f"{r['source']} on {r['answers']} answers from {', '.join(r['files'])} "
        f"(pairs: judge preferences {r['min_gap']} or more apart); the reward's Spearman correlation with "
        f"length: {r['length_correlation']:.3f}; {_references_said(r['references'])}"
    )
    print(
        text_table(
            pl.DataFrame(
                rows,
                schema=[
                    "split",
                    "pairs",
                    "reward_prefers_winner",
                    "reward_ties",
                    "longer_wins",
                    "shorter_won",
                    "reward_on_shorter_won",
                    "length_balanced",
                    "length_controlled",
                    "only_reward_right",
                    "only_longer_right",
                    "sign_test_p",
                ],
                orient="row",
            )
        )
    )


def _references_said(used: bool) -> str:
    return (
        "reference answers: each annotation's output_1"
        if used
        else "no reference answers (--no-references: the pack's reference functions abstain)"
    )


def _recipe_conflicts(args: argparse.Namespace) -> str | None:
    """What --recipe cannot be combined with (one message), or the recipe-only options given without it."""
    if args.recipe is None:
        if args.base_policy or args.skip_model_lfs:
            return "--base-policy and --skip-model-lfs go with --recipe"
        return None
    given = [
        flag
        for flag, on in (
            ("--lf-pack", args.lf_pack is not None),
            ("--eval-alpaca-pairs", bool(args.eval_alpaca_pairs)),
            ("--model", bool(args.model)),
            (f"--reward {args.reward}", args.reward != "label_model"),
        )
        if on
    ]
    if given:
        return (
            f"--recipe and {', '.join(given)} cannot be combined: --recipe scores --input rows with the recipe's "
            "labeling functions and label model (--lf-pack: an LF pack's instead)"
        )
    if args.base_policy and args.skip_model_lfs:
        return "--base-policy and --skip-model-lfs cannot be combined"
    return None


def _run_recipe(args: argparse.Namespace) -> int:
    import polars as pl

    from prefscale.report import text_table  # lazy: CLI start-up
    from prefscale.tools.score import ScoreInputError  # lazy: CLI start-up
    from prefscale.tools.score_recipe import score_file_with_recipe  # lazy: CLI start-up

    try:
        summary = score_file_with_recipe(
            args.input,
            args.output,
            args.recipe,
            base_policy=args.base_policy,
            skip_model_lfs=args.skip_model_lfs,
            seed=args.seed,
        )
    except (ScoreInputError, ValueError, OSError) as e:  # bad rows, recipe, functions or model folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    types = ", ".join(f"{t} {n}" for t, n in summary["task_types"].items())
    origins = ", ".join(f"{n} from {o}" for o, n in sorted(summary["task_type_origins"].items()))
    print(
        f"scored {summary['rows']} rows with {summary['source']} -> {args.output} "
        f"(reward mean {summary['mean']:.4f}, min {summary['min']:.4f}, max {summary['max']:.4f}, "
        f"{summary['distinct']} distinct)"
    )
    print(f"task types: {types} ({origins})")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(text_table(summary["analysis"].with_columns(pl.col(pl.Float64).round(3))))
    return 0


def _grid(text: str) -> tuple[float | None, ...]:
    """--holdout-grid: comma-separated thresholds in (0, 1], `none` for the LF left out."""
    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "none":
            out.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"--holdout-grid: {item!r} is not a number or 'none'") from None
        if not 0 < value <= 1:
            raise ValueError(f"--holdout-grid: {value} is not in (0, 1]")
        out.append(value)
    return tuple(out)


def _run_model_holdout(args: argparse.Namespace, pack: str, seed: int) -> int:
    import polars as pl

    from prefscale.report import text_table  # lazy: CLI start-up
    from prefscale.tools.score_holdout import DEFAULT_GRID, model_holdout  # lazy: CLI start-up

    if args.reward != "label_model":
        print("error: --model-holdout tunes an LF pack: it takes the label_model reward", file=sys.stderr)
        return 2
    try:
        grid = _grid(args.holdout_grid) if args.holdout_grid else DEFAULT_GRID
        r = model_holdout(
            args.eval_alpaca_pairs,
            pack=pack,
            lf=args.model_holdout,
            grid=grid,
            min_gap=args.min_gap,
            seed=seed,
            references=not args.no_references,
            optional_lfs=[n.strip() for n in args.holdout_optional.split(",")]
            if args.holdout_optional
            else (),
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    d = r["held_out"]
    print(
        f"model-level holdout of LF pack {pack} ({r['lf']}'s thresholds tuned on the other models' pairs): "
        f"{d['pairs']} held-out pairs, the reward prefers the judge's winner in {d['reward_accuracy']:.3f} "
        f"(longer wins {d['longer_accuracy']:.3f}); where the shorter won ({d['shorter_won_pairs']} pairs) "
        f"{d['reward_accuracy_shorter_won']:.3f}; length-balanced {d['length_balanced_accuracy']:.3f}; "
        f"length-controlled {d['lc_reward_accuracy']:.3f}; {_references_said(r['references'])}"
    )
    splits = pl.DataFrame(
        [
            (
                " vs ".join(s["held_out"]),
                str(s["threshold"]),
                ", ".join(s["left_out"]) or "-",
                round(s["tuning_length_balanced"], 3),
                s["held_out_pairs"],
            )
            for s in r["splits"]
        ],
        schema=["held_out", "threshold", "left_out", "tuning_length_balanced", "held_out_pairs"],
        orient="row",
    )
    print(text_table(splits))
    return 0


def _run(args: argparse.Namespace) -> int:
    from prefscale.config.labeling import DEFAULT_PACK  # lazy: CLI start-up
    from prefscale.tools.score import ScoreInputError, evaluate_alpaca_pairs, score_file  # lazy: CLI start-up

    conflict = _recipe_conflicts(args)
    if conflict:
        print(f"error: {conflict}", file=sys.stderr)
        return 2
    if args.recipe is not None:
        if not args.input or not args.output:
            print("error: --recipe scores rows: give --input and --output", file=sys.stderr)
            return 2
        return _run_recipe(args)
    pack = args.lf_pack or DEFAULT_PACK
    seed = 0 if args.seed is None else args.seed
    if args.model_holdout and not args.eval_alpaca_pairs:
        print("error: --model-holdout goes with --eval-alpaca-pairs DIR", file=sys.stderr)
        return 2
    if args.no_references and not args.eval_alpaca_pairs:
        print("error: --no-references goes with --eval-alpaca-pairs DIR", file=sys.stderr)
        return 2
    if (args.holdout_grid or args.holdout_optional) and not args.model_holdout:
        print("error: --holdout-grid and --holdout-optional go with --model-holdout", file=sys.stderr)
        return 2
    if args.eval_alpaca_pairs:
        if args.input or args.output:
            print("error: --eval-alpaca-pairs takes no --input/--output", file=sys.stderr)
            return 2
        if args.model_holdout:
            return _run_model_holdout(args, pack, seed)
        try:
            r = evaluate_alpaca_pairs(
                args.eval_alpaca_pairs,
                source=args.reward,
                pack=pack,
                model=args.model,
                min_gap=args.min_gap,
                seed=seed,
                references=not args.no_references,
            )
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(r))
        else:
            _print_eval(r)
        return 0
    if not args.input or not args.output:
        print("error: give --input and --output (or --eval-alpaca-pairs DIR)", file=sys.stderr)
        return 2
    try:
        summary = score_file(
            args.input, args.output, source=args.reward, pack=pack, model=args.model, seed=seed
        )
    except (ScoreInputError, ValueError, OSError) as e:  # bad rows, pack, source or model folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"scored {summary['rows']} rows with {summary['source']} -> {args.output} "
        f"(reward mean {summary['mean']:.4f}, min {summary['min']:.4f}, max {summary['max']:.4f}, "
        f"{summary['distinct']} distinct; {summary['with_reference']} rows with a reference)"
    )
    return 0


def register(subparsers: Any) -> None:
    """Add the `score` sub-command to the `prefscale` parser."""
    from prefscale.config.labeling import DEFAULT_PACK  # lazy: CLI start-up

    p = subparsers.add_parser(
        "score", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--input",
        metavar="IN.jsonl",
        help="rows with string fields prompt and response (optionally finish_reason; task_type, read by --recipe)",
    )
    p.add_argument("--output", metavar="OUT.jsonl", help="the same rows with a float reward")
    p.add_argument(
        "--reward",
        choices=reward_registry.REWARD_SOURCES.names,
        default="label_model",
        help="reward source (default label_model: the LF pack + a label model fitted on the input)",
    )
    p.add_argument(
        "--lf-pack",
        default=None,
        metavar="NAME|PATH",
        help=f"label_model: an LF pack in recipes/lf_packs/ or a YAML path (default {DEFAULT_PACK}); not with "
        "--recipe",
    )
    p.add_argument(
        "--recipe",
        metavar="NAME|PATH",
        help="label_model with a recipe's own labeling functions, task types and label model (a name in "
        "recipes/ or a YAML path) instead of an LF pack",
    )
    p.add_argument(
        "--base-policy",
        metavar="DIR",
        help="--recipe: the model folder that `model: base_policy` functions run on (e.g. "
        "$PREFSCALE_HOME/artifacts/base_policy/all/current)",
    )
    p.add_argument(
        "--skip-model-lfs",
        action="store_true",
        help="--recipe: leave out the recipe's model-backed functions (said in the output)",
    )
    p.add_argument(
        "--model", help="reward_model: a model folder; pairrm: a hub id, a ranker folder or 'tiny'"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="label model / tiny ranker seed (default 0; with --recipe, the recipe's seed)",
    )
    p.add_argument(
        "--eval-alpaca-pairs",
        metavar="DIR",
        help="measure the reward on the pairs implied by the AlpacaEval annotation files in DIR",
    )
    p.add_argument("--min-gap", type=float, default=0.5, help="--eval-alpaca-pairs: preference gap (0.5)")
    p.add_argument(
        "--model-holdout",
        nargs="?",
        const="consensus",
        default=None,
        metavar="LF",
        help="--eval-alpaca-pairs: a model-level holdout, LF's thresholds (default consensus) tuned on the "
        "other models' pairs",
    )
    p.add_argument(
        "--holdout-grid",
        metavar="T,T,...",
        help="--model-holdout: the thresholds tried (none: LF left out; default none,0.02,0.04,0.05,0.06,0.07,"
        "0.08,0.1)",
    )
    p.add_argument(
        "--holdout-optional",
        metavar="LF,LF,...",
        help="--model-holdout: also choose, per split on the other models' pairs, which of these functions to keep "
        "(every subset is tried)",
    )
    p.add_argument(
        "--no-references",
        action="store_true",
        help="--eval-alpaca-pairs: leave out the annotations' reference answers (output_1), so the pack's "
        "reference functions abstain",
    )
    p.add_argument("--json", action="store_true", help="--eval-alpaca-pairs: one JSON object")
    p.set_defaults(func=_run)
