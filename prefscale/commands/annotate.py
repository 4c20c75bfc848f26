"""`prefscale annotate`: start Label Studio for SMEs on 127.0.0.1, with the two prefscale projects ready."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

HELP = "start Label Studio (its own virtualenv) on 127.0.0.1 with the ranking and blind-evaluation projects"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXECUTABLE = REPO_ROOT / ".venv-label-studio" / "bin" / "label-studio"


def _run(args: argparse.Namespace) -> int:
    from prefscale.annotation import server  # lazy: CLI start-up
    from prefscale.annotation.label_studio import LabelStudio, LabelStudioError  # lazy: CLI start-up
    from prefscale.annotation.pairwise import PAIRWISE_PROJECT, pairwise_config  # lazy: CLI start-up
    from prefscale.annotation.ranking import RANKING_PROJECT, ranking_config  # lazy: CLI start-up
    from prefscale.config.base import RecipeError  # lazy: CLI start-up
    from prefscale.config.recipe import load_recipe  # lazy: CLI start-up
    from prefscale.storage import default_home  # lazy: CLI start-up

    if not 1 <= args.port <= 65535:
        print(f"error: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        n = load_recipe(args.recipe).generation.num_candidates
    except (RecipeError, FileNotFoundError, ValueError) as e:
        print(f"error: --recipe {args.recipe}: {e}", file=sys.stderr)
        return 2
    folder = (Path(args.home).expanduser().resolve() if args.home else default_home()) / server.SERVER_DIR
    exe = Path(args.label_studio)
    print(
        f"starting Label Studio on http://{args.host}:{args.port} (first start: ~2 minutes); log: {folder}/server.log"
    )
    try:
        srv = server.start(exe, folder, port=args.port, host=args.host)
    except (FileNotFoundError, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        key = server.api_key(folder, srv.url)
        client = LabelStudio(srv.url, key)
        client.ensure_project(
            RANKING_PROJECT, ranking_config(n), "Rank each prompt's candidates, best first."
        )
        client.ensure_project(PAIRWISE_PROJECT, pairwise_config(), "Blind: which reply is better, or a tie?")
    except (RuntimeError, LabelStudioError) as e:
        srv.stop()
        print(f"error: {e}", file=sys.stderr)
        return 1
    user, _ = server.credentials(folder)
    print(f"Label Studio: {srv.url}  (sign in as {user}; the password is in {folder / server.CREDENTIALS})")
    print("for Dagster (annotation_tasks, sme_eval_tasks, sme_annotations and its sensor), in its shell:")
    print(f"  export LABEL_STUDIO_URL={srv.url}")
    print(f"  export LABEL_STUDIO_API_KEY=$(cat {folder / server.API_KEY_FILE})")
    print("Ctrl-C stops the server; tasks and annotations stay in", folder)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        srv.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


def register(subparsers: Any) -> None:
    """Add the `annotate` sub-command to the `prefscale` parser."""
    p = subparsers.add_parser("annotate", help=HELP, description=HELP)
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; anything else exposes the SMEs' tool beyond this machine)",
    )
    p.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    p.add_argument(
        "--recipe",
        default=os.environ.get("PREFSCALE_RECIPE", "embedded"),
        help="the recipe whose candidates SMEs rank (sizes the ranking screen)",
    )
    p.add_argument(
        "--label-studio",
        default=os.environ.get("PREFSCALE_LABEL_STUDIO", str(DEFAULT_EXECUTABLE)),
        help="the label-studio executable (default: .venv-label-studio/bin/label-studio, `make annotate-install`)",
    )
    p.set_defaults(func=_run)
