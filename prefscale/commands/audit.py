"""`prefscale audit CHECKPOINT`: print a checkpoint's full lineage and verify every recorded hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefscale.storage import ArtifactStore, MissingArtifactError, default_home


def _run(args: argparse.Namespace) -> int:
    from prefscale.audit import audit_chain, render, resolve_checkpoint

    home = Path(args.home).expanduser().resolve() if args.home else default_home()
    store = ArtifactStore(home)
    try:
        root = resolve_checkpoint(store, args.checkpoint)
    except (MissingArtifactError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = audit_chain(store, root)
    db = home / "mlflow.db"
    if db.is_file() and root.digest:
        from prefscale.lineage import find_training_runs, tracking_uri_for

        report.training_runs = find_training_runs(tracking_uri_for(home), args.experiment, root.digest)
    print(render(report, store))
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="print a checkpoint's lineage (prompts → candidates → LFs → labels → rewards → pairs → training → "
        "evaluation) and verify every hash; exits 1 on any mismatch",
    )
    p.add_argument(
        "checkpoint", help="an iteration number (its current dpo_checkpoint) or a stored version folder"
    )
    p.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    p.add_argument("--experiment", default="prefscale", help="MLflow experiment holding the training runs")
    p.set_defaults(func=_run)
