"""`prefscale audit CHECKPOINT`: print a checkpoint's full lineage and verify every recorded hash."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefscale.storage import ArtifactStore, MissingArtifactError, default_home


def _is_model_ref(what: str) -> bool:
    """An MLflow model version rather than an iteration or a path: `models:/...`, or NAME/VERSION that is no path."""
    from prefscale.lineage.mlflow_runs import parse_model_ref  # lazy: CLI start-up

    if what.startswith("models:/"):
        return True
    return not what.isdigit() and not Path(what).expanduser().exists() and parse_model_ref(what) is not None


def _run(args: argparse.Namespace) -> int:
    from prefscale.lineage.audit import (
        audit_chain,
        render,
        resolve_checkpoint,
        resolve_registered,
    )  # lazy: CLI start-up

    home = Path(args.home).expanduser().resolve() if args.home else default_home()
    store = ArtifactStore(home)
    db = home / "mlflow.db"
    uri = args.tracking_uri
    if not uri:
        from prefscale.lineage.mlflow_runs import tracking_uri_for  # lazy: CLI start-up

        uri = tracking_uri_for(home)
    registered = None
    try:
        if _is_model_ref(args.checkpoint):
            from prefscale.lineage.mlflow_runs import registered_checkpoint  # lazy: CLI start-up

            registered = registered_checkpoint(uri, args.checkpoint)
            root = resolve_registered(store, registered)
        else:
            root = resolve_checkpoint(store, args.checkpoint)
    except (MissingArtifactError, ValueError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    expected = registered.tags.get("checkpoint.sha256") if registered is not None else None
    report = audit_chain(store, root, expected_sha256=expected)
    if registered is not None:
        report.requested = f"{registered.label} (MLflow model version, {uri})"
    if (args.tracking_uri or db.is_file()) and root.digest:
        from prefscale.lineage.mlflow_runs import (
            find_training_runs,
            model_versions_of_checkpoint,
        )  # lazy: CLI start-up

        report.training_runs = find_training_runs(uri, args.experiment, root.digest)
        report.model_versions = model_versions_of_checkpoint(uri, root.digest)
    print(render(report, store))
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "audit",
        help="print a checkpoint's lineage (prompts → candidates → LFs → labels → rewards → pairs → training → "
        "evaluation) and verify every hash; exits 1 on any mismatch or missing artifact, 2 when the checkpoint "
        "cannot be found",
    )
    p.add_argument(
        "checkpoint",
        help="an iteration number (its current dpo_checkpoint), a stored version folder, or an MLflow registered "
        "model version: models:/NAME/VERSION, NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS "
        "(e.g. models:/prefscale-embedded/2)",
    )
    p.add_argument("--home", help="PREFSCALE_HOME (default: $PREFSCALE_HOME or ./.prefscale)")
    p.add_argument("--experiment", default="prefscale", help="MLflow experiment holding the training runs")
    p.add_argument(
        "--tracking-uri",
        help="MLflow tracking store holding the registry (default: sqlite:///<home>/mlflow.db)",
    )
    p.set_defaults(func=_run)
