"""`prefscale init DIR`: scaffold a team's own recipe (recipe, prompts, Python labeling functions, SME guide)."""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

HELP = (
    "scaffold a team's own recipe in a new folder: recipe.yaml, prompts, Python labeling functions, SME guide"
)
DESCRIPTION = """\
Write a starting point for a team's own recipe into DIR (a new or empty folder; nothing is ever overwritten):
recipe.yaml (commented: the embedded tiny model, so it runs offline in minutes; prompts from the file below;
pattern and Python labeling functions), prompts.jsonl (example help-desk prompts to replace with yours),
<name>_lfs.py (the Python labeling functions, importable through the recipe's labeling.modules with no
PYTHONPATH), SME_GUIDE.md (how SMEs write functions, read lf_summary and add gold) and example_rows.jsonl (rows
to try `prefscale score --recipe` on). Then validate it and run it with the commands printed."""


def _run(args: argparse.Namespace) -> int:
    from prefscale.tools.init_scaffold import (
        REPO_ROOT,
        InitError,
        repo_relative,
        scaffold,
    )  # lazy: CLI start-up

    try:
        s = scaffold(args.dir, name=args.name)
    except InitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shown = args.dir.rstrip("/") or "/"
    venv_script = REPO_ROOT / ".venv" / "bin" / "prefscale"
    exe = (
        ".venv/bin/prefscale" if shutil.which("prefscale") is None and venv_script.is_file() else "prefscale"
    )
    example = repo_relative(s.folder / "example_rows.jsonl")
    scored = repo_relative(s.folder / "example_scored.jsonl")
    print(f"wrote {shown}/: {', '.join(s.files)} (recipe {s.name!r})")
    print(
        "next, in the prefscale repository"
        + (f" ({REPO_ROOT})" if (REPO_ROOT / "Makefile").is_file() else "")
    )
    print(f"  {exe} recipe validate {s.recipe_ref}")
    print(f"  {exe} score --recipe {s.recipe_ref} --input {example} --output {scored}")
    print(f"  make run RECIPE={s.recipe_ref}")
    print(f"then replace the example prompts and functions with your team's: see {shown}/SME_GUIDE.md")
    return 0


def register(subparsers: Any) -> None:
    """Add the `init` sub-command to the `prefscale` parser."""
    p = subparsers.add_parser(
        "init", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("dir", metavar="DIR", help="the folder to create (it may exist if it is empty)")
    p.add_argument(
        "--name",
        help="the recipe's name (letters, digits, _ . -; default: from DIR's name); the module of the Python "
        "labeling functions is <name>_lfs.py",
    )
    p.set_defaults(func=_run)
