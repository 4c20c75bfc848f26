"""`prefscale train-dpo`: one DPO training run as its own process (the `dpo_checkpoint` asset launches it).

    prefscale train-dpo --policy DIR --pairs PAIRS.parquet --out DIR [--work-dir DIR] [--reference DIR]
                        [--recipe NAME | --settings-json JSON] [--seed N] [--device auto|cpu|cuda] [--json]

Run alone it trains in one process; under `accelerate launch --num_processes N -m prefscale.cli train-dpo ...`
every rank runs it (DDP; gloo on CPU, or DeepSpeed/FSDP from an accelerate config file) and rank 0 writes the
model. Trainer checkpoints go to `--work-dir` (default `$PREFSCALE_HOME/work/train-dpo/<fingerprint>`); a run
that finds a complete one there resumes from it. The training report is written to `--report` (default
`<work-dir>/report.json`).

Launched by Dagster Pipes (`dagster.PipesSubprocessClient`), rank 0 also sends every step's metrics, the
progress lines (every tenth of the run) and the materialization metadata back through `dagster_pipes`;
launched any other way, it simply does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefscale.config.base import RecipeError
from prefscale.config.recipe import load_recipe
from prefscale.config.training import DPOSettings
from prefscale.training.launch import launcher, train_dpo_args

__all__ = ["launcher", "register", "train_dpo_args", "work_dir_lock"]

EXIT_BAD_INPUT = 2


def _is_main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def pipes_session() -> Iterator[Any | None]:
    """The Dagster Pipes context on rank 0 when launched by Pipes; None otherwise (no Pipes, or another rank)."""
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR

    if not _is_main_rank() or DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        yield None
        return
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        yield pipes


DPO_STEP_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def _step_callback(pipes: Any, keys: tuple[str, ...] = DPO_STEP_KEYS) -> Any:
    """A TrainerCallback that sends every logged step's `keys` to Dagster as a custom message (the run log gets
    the progress lines, every tenth of the run: see `_forward_progress`)."""
    from transformers import TrainerCallback

    class PipesStepReporter(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            row = {k: float(logs[k]) for k in keys if k in logs}
            pipes.report_custom_message({"step": int(state.global_step), **row})

    return PipesStepReporter()


@contextlib.contextmanager
def _forward_progress(pipes: Any | None) -> Iterator[None]:
    """Progress lines (`prefscale.progress`) go to the Dagster run log through Pipes while training, and only
    there (not to stderr as well)."""
    if pipes is None:
        yield
        return
    import logging

    from prefscale.progress import LOGGER_NAME, forward_progress  # lazy: CLI start-up

    logger = logging.getLogger(LOGGER_NAME)
    handler, propagate = forward_progress(pipes.log.info), logger.propagate
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _settings(args: argparse.Namespace) -> tuple[DPOSettings, int]:
    from pydantic import ValidationError

    if args.settings_json:
        try:
            settings = DPOSettings.model_validate_json(args.settings_json)
        except ValidationError as e:
            lines = ["invalid dpo settings (--settings-json):"]
            for err in e.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
                lines.append(
                    f"  - dpo.{loc}: {'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                )
            raise RecipeError("\n".join(lines)) from None
        return settings, args.seed if args.seed is not None else 0
    overrides = json.loads(args.overrides_json) if args.overrides_json else None
    recipe = load_recipe(args.recipe, overrides)
    return recipe.dpo, args.seed if args.seed is not None else recipe.seed


def _quiet() -> None:
    """No progress bars or deprecation chatter from the HF stack: stdout carries the summary only."""
    import warnings

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


@contextlib.contextmanager
def work_dir_lock(work: Path) -> Iterator[None]:
    """An exclusive lock on the work dir for the life of this process (rank 0 only).

    A training process orphaned by a killed Dagster run may still be writing checkpoints there; a second run
    must not train into the same folder at the same time. The kernel drops the lock when the holder dies.
    """
    if not _is_main_rank():
        yield
        return
    import fcntl

    work.mkdir(parents=True, exist_ok=True)
    with (work / ".lock").open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ValueError(f"work dir {work} is in use by {holder}: wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _compute(device: str, threads: int | None, dtype: str | None = None) -> Any:
    from prefscale.compute import resolve_compute  # lazy: CLI start-up

    local_rank = os.environ.get("LOCAL_RANK")
    if local_rank is not None and device in {"auto", "cuda"}:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(local_rank))
            device = f"cuda:{local_rank}"
    return resolve_compute(device, threads, dtype)


def _run(args: argparse.Namespace) -> int:
    import polars as pl

    from prefscale.storage import default_home, digest_folder, file_sha256  # lazy: CLI start-up
    from prefscale.training.dpo import REPORT_FILE, dpo_fingerprint, train_dpo  # lazy: CLI start-up

    # Everything that can be wrong with the inputs fails here, before a model is loaded.
    settings, seed = _settings(args)
    policy = Path(args.policy).expanduser().resolve()
    if not (policy / "config.json").is_file():
        raise ValueError(f"--policy {policy}: not a model folder (no config.json)")
    reference = Path(args.reference).expanduser().resolve() if args.reference else None
    if reference is not None and not (reference / "config.json").is_file():
        raise ValueError(f"--reference {reference}: not a model folder (no config.json)")
    pairs_path = Path(args.pairs).expanduser().resolve()
    try:
        pairs = pl.read_parquet(pairs_path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"--pairs {pairs_path}: cannot read a Parquet table ({e})") from None
    missing = {"prompt", "chosen", "rejected"} - set(pairs.columns)
    if missing:
        raise ValueError(f"--pairs {pairs_path}: missing column(s) {sorted(missing)}")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out}: not empty")
    compute = _compute(args.device, args.threads, args.dtype)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.work_dir:
        work = Path(args.work_dir).expanduser().resolve()
    else:
        fp = dpo_fingerprint(
            policy_sha256=digest_folder(policy),
            pairs_sha256=file_sha256(pairs_path),
            reference_sha256=digest_folder(reference) if reference is not None else "",
            settings=settings,
            seed=seed,
            compute=compute,
            world_size=world_size,
        )
        work = default_home() / "work" / "train-dpo" / fp[:16]
    report_path = Path(args.report).expanduser().resolve() if args.report else work / REPORT_FILE

    _quiet()
    with work_dir_lock(work), pipes_session() as pipes, _forward_progress(pipes):
        resumed: list[str] = []
        report = train_dpo(
            policy,
            pairs,
            settings,
            out,
            work,
            compute,
            seed,
            reference_dir=reference,
            resume=not args.no_resume,
            callbacks=[_step_callback(pipes)] if pipes is not None else (),
            on_resume=lambda ckpt: resumed.append(str(ckpt)),
        )
        if not _is_main_rank():
            return 0
        summary = finish_training(
            report,
            report_path,
            pipes,
            compute,
            {"world_size": report.world_size, "distributed_type": report.distributed_type},
            {"resumed_from": resumed[0] if resumed else ""},
        )
    if args.json:
        print(json.dumps({**summary, "out": str(out), "report": str(report_path)}), flush=True)
    else:
        how = f"resumed from step {report.resumed_from_step}" if report.resumed_from_step else "from scratch"
        print(
            f"trained {report.steps} steps ({report.steps_run} in this run, {how}) on {report.world_size} "
            f"process(es): loss {report.final['loss']:.4f}, margin {report.final['rewards/margins']:.4f} -> {out}",
            flush=True,
        )
    return 0


def finish_training(
    report: Any,
    report_path: Path,
    pipes: Any | None,
    compute: Any,
    extra: dict[str, Any],
    pipes_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the training report, and report its summary (steps, resumption, seconds, final metrics, plus `extra`)
    through Dagster Pipes when launched by it, with the device, the report's path and `pipes_extra`; the summary."""
    report.write(report_path)
    summary = {
        "steps": report.steps,
        "steps_run": report.steps_run,
        "resumed_from_step": report.resumed_from_step,
        **extra,
        "train_seconds": round(report.seconds, 3),
        **{f"final_{k.replace('/', '_')}": round(v, 6) for k, v in report.final.items()},
    }
    if pipes is not None:
        pipes.report_asset_materialization(
            metadata={
                **summary,
                "device": compute.describe(),
                **(pipes_extra or {}),
                "report": {"raw_value": str(report_path), "type": "path"},
            }
        )
    return summary


def reporting_bad_input(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`run(args)`, with a bad input printed as `error: ...` and exit 2 (recipe errors go to `prefscale.cli`)."""
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as e:
        if isinstance(e, RecipeError):
            raise  # prefscale.cli reports recipe errors (exit 2)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _cmd_train_dpo(args: argparse.Namespace) -> int:
    return reporting_bad_input(_run, args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-dpo",
        help="train one DPO checkpoint (TRL) in this process; resumable; runs under accelerate launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", required=True, help="model folder to start from (the previous iteration)")
    p.add_argument("--pairs", required=True, help="preference pairs Parquet (prompt, chosen, rejected)")
    p.add_argument("--out", required=True, help="folder for the merged model (+ adapter/ with LoRA); empty")
    p.add_argument(
        "--work-dir", help="trainer checkpoints (resume point); default under $PREFSCALE_HOME/work"
    )
    p.add_argument("--reference", help="reference model folder (default: the starting policy itself)")
    p.add_argument(
        "--recipe", default="embedded", help="recipe whose `dpo` section is used (default embedded)"
    )
    p.add_argument("--overrides-json", default="", help="nested recipe overrides as JSON")
    p.add_argument("--settings-json", default="", help="the `dpo` settings as JSON (instead of --recipe)")
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's seed, or 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="auto (default): bf16 on CUDA and on CPUs with fast bf16, fp32 elsewhere; PREFSCALE_DTYPE overrides",
    )
    p.add_argument("--report", help="training report JSON (default <work-dir>/report.json)")
    p.add_argument("--no-resume", action="store_true", help="ignore trainer checkpoints in the work dir")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    p.set_defaults(func=_cmd_train_dpo)
