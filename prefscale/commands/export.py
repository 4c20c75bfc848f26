"""`prefscale export pairs|sft`: the published preference pairs or curated SFT subset as a dataset (Hugging Face
`DatasetDict`, Parquet or JSON Lines), optionally pushed to the Hub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefscale.storage import default_home

HELP = (
    "export the preference pairs (or the curated SFT subset) as a Hugging Face dataset, Parquet or JSON Lines"
)
DESCRIPTION = """\
pairs: every iteration's current preference_pairs in the columns of the seed dataset
(snorkelai/Snorkel-Mistral-PairRM-DPO-Dataset, like HuggingFaceH4/ultrafeedback_binarized): prompt_id, prompt
(the user's text), chosen and rejected (the conversation: user turn, then the assistant reply), messages
(= chosen), score_chosen, score_rejected (the raw rewards). sft: curated_sft as prompt_id, prompt, messages, score.
Splits train_iteration_{i} and, from a held-out share of each iteration's prompts (chosen by the sha256 of the
prompt_id, so stable), test_iteration_{i}.

--format hf (default) writes a DatasetDict with save_to_disk (datasets.load_from_disk(DIR) reads it); parquet and
jsonl write one DIR/<split>.<ext> file per split. DIR/prefscale_export.json names every source artifact's version
and sha256. The export is written into a temporary folder next to DIR and renamed into place when complete.
Exit codes: 0 done; 2 a bad input (no home, nothing materialized, an unknown iteration, DIR not empty without
--overwrite), nothing written; 1 the Hub push failed, nothing written."""


def _run(args: argparse.Namespace) -> int:
    from prefscale.tools.export import ExportError, HubPushError, export  # lazy: CLI start-up

    home = Path(args.home).expanduser().resolve() if args.home else default_home()
    try:
        result = export(
            home,
            args.what,
            args.out,
            iterations=args.iteration,
            fmt=args.format,
            test_share=args.test_share,
            keep_system=args.keep_system,
            overwrite=args.overwrite,
            push_to_hub=args.push_to_hub,
            private=args.private,
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HubPushError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{name} {rows}" for name, rows in result.splits.items())
    where = [str(result.out)] if result.out else []
    if result.pushed_to:
        where.append(f"the Hub repo {result.pushed_to}")
    versions = ", ".join(f"{s['iteration']}@{s['version']}" for s in result.record["sources"])
    print(f"exported {args.what} ({args.format}; {versions}) -> {' and '.join(where)}: {sizes}")
    return 0


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add the `export` sub-command to the `prefscale` parser."""
    p = subparsers.add_parser(
        "export", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=["pairs", "sft"], help="pairs: preference_pairs; sft: curated_sft")
    p.add_argument("--out", metavar="DIR", help="the folder to write (empty or absent; see --overwrite)")
    p.add_argument(
        "--iteration",
        type=int,
        action="append",
        metavar="I",
        help="export only this iteration (repeatable; default: every materialized one)",
    )
    p.add_argument(
        "--format",
        choices=["hf", "parquet", "jsonl"],
        default="hf",
        help="hf: DatasetDict.save_to_disk (default); parquet/jsonl: one file per split",
    )
    p.add_argument(
        "--test-share",
        type=_share,
        default=0.1,
        metavar="S",
        help="share of each iteration's prompts held out as test_iteration_{i} (default 0.1; 0: no test splits)",
    )
    p.add_argument(
        "--keep-system",
        action="store_true",
        help="keep the recipe's system message as the first turn (default: dropped, the user turn comes first "
        "as in the seed dataset)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="also push the DatasetDict (and prefscale_export.json) to this Hub dataset repo (needs HF_TOKEN)",
    )
    p.add_argument("--private", action="store_true", help="--push-to-hub: create the repo private")
    p.set_defaults(func=_run)
