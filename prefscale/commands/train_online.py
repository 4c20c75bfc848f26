"""`prefscale train-online`: one GRPO or RLOO training run as its own process (the `dpo_checkpoint` asset launches
it for `training.method` grpo or rloo).

    prefscale train-online --method grpo|rloo --policy DIR --prompts PROMPTS.parquet --out DIR
                           --recipe NAME|PATH [--overrides-json JSON] --label-model PARAMS.parquet
                           [--base-policy DIR] [--reward-model DIR] [--work-dir DIR] [--seed N] [--json]

The recipe gives the `online` settings, the `reward` sources and the labeling functions; `--label-model` is the
iteration's fitted label model (the `label_model` table of `quality_labels`), which turns the functions' votes
on each completion into P(high). Trainer checkpoints go to `--work-dir`; a run that finds a complete one there
resumes from it. Launched by Dagster Pipes, every step's reward, KL, completion length and repeated-line share
go back to Dagster.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from prefscale.commands.train import (
    _compute,
    _forward_progress,
    _is_main_rank,
    _quiet,
    _step_callback,
    finish_training,
    pipes_session,
    reporting_bad_input,
    work_dir_lock,
)
from prefscale.config.recipe import load_recipe

ONLINE_STEP_KEYS = (
    "loss",
    "reward",
    "kl",
    "completions/mean_length",
    "completions/clipped_ratio",
    "completions/repeated_line_share",
)


def _model_dir(flag: str, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise ValueError(f"{flag} {path}: not a model folder (no config.json)")
    return path


def _parquet(flag: str, value: str | None, columns: set[str]) -> Any:
    import polars as pl

    if not value:
        return None
    path = Path(value).expanduser().resolve()
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ValueError(f"{flag} {path}: cannot read a Parquet table ({e})") from None
    missing = columns - set(frame.columns)
    if missing:
        raise ValueError(f"{flag} {path}: missing column(s) {sorted(missing)}")
    return frame


def _run(args: argparse.Namespace) -> int:
    from prefscale.labeling.label_model import PARAMS_SCHEMA  # lazy: CLI start-up
    from prefscale.rewards.online import online_reward  # lazy: CLI start-up
    from prefscale.storage import default_home  # lazy: CLI start-up
    from prefscale.training.dpo import REPORT_FILE  # lazy: CLI start-up
    from prefscale.training.online import train_online  # lazy: CLI start-up

    # Everything that can be wrong with the inputs fails here, before a model is loaded.
    recipe = load_recipe(args.recipe, json.loads(args.overrides_json) if args.overrides_json else None)
    policy = _model_dir("--policy", args.policy)
    base_policy = _model_dir("--base-policy", args.base_policy) or policy
    reward_model = _model_dir("--reward-model", args.reward_model)
    prompts = _parquet("--prompts", args.prompts, {"prompt_id", "prompt"})
    params = _parquet("--label-model", args.label_model, set(PARAMS_SCHEMA))
    out = Path(args.out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out}: not empty")
    compute = _compute(args.device, args.threads, args.dtype)
    seed = args.seed if args.seed is not None else recipe.seed
    reward = online_reward(
        recipe.reward,
        recipe.labeling.all_functions,
        label_model_params=params,
        base_policy=base_policy,
        policy=policy,
        reward_model_dir=reward_model,
        compute=compute,
        seed=seed,
        max_completion_length=recipe.online.max_completion_length,
    )
    work = (
        Path(args.work_dir).expanduser().resolve()
        if args.work_dir
        else default_home() / "work" / "train-online" / f"{args.method}-{out.name}"
    )
    report_path = Path(args.report).expanduser().resolve() if args.report else work / REPORT_FILE

    _quiet()
    with work_dir_lock(work), pipes_session() as pipes, _forward_progress(pipes):
        report = train_online(
            args.method,
            policy,
            prompts,
            reward,
            recipe.online,
            out,
            work,
            compute,
            seed,
            system=recipe.policy.system_prompt,
            resume=not args.no_resume,
            callbacks=[_step_callback(pipes, ONLINE_STEP_KEYS)] if pipes is not None else (),
        )
        if not _is_main_rank():
            return 0
        summary = finish_training(report, report_path, pipes, compute, {"method": args.method})
    if args.json:
        print(json.dumps({**summary, "out": str(out), "report": str(report_path)}), flush=True)
    else:
        print(
            f"{args.method}: trained {report.steps} steps ({report.steps_run} in this run): reward "
            f"{report.final['reward']:.4f}, kl {report.final['kl']:.4f} -> {out}",
            flush=True,
        )
    return 0


def _cmd_train_online(args: argparse.Namespace) -> int:
    return reporting_bad_input(_run, args)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train-online",
        help="train one GRPO or RLOO checkpoint (TRL) against the recipe's reward, in this process; resumable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--method", required=True, choices=["grpo", "rloo"], help="the TRL trainer")
    p.add_argument("--policy", required=True, help="model folder to start from (the previous iteration)")
    p.add_argument("--prompts", required=True, help="prompts Parquet (prompt_id, prompt[, task_type])")
    p.add_argument("--out", required=True, help="folder for the merged model (+ adapter/ with LoRA); empty")
    p.add_argument(
        "--recipe", default="embedded", help="recipe (name or YAML path): online settings, reward, LFs"
    )
    p.add_argument("--overrides-json", default="", help="nested recipe overrides as JSON")
    p.add_argument("--label-model", help="the fitted label model's parameters (quality_labels' label_model)")
    p.add_argument("--base-policy", help="the model LFs with `model: base_policy` run on (default --policy)")
    p.add_argument("--reward-model", help="a trained reward model folder (reward source reward_model)")
    p.add_argument(
        "--work-dir", help="trainer checkpoints (resume point); default under $PREFSCALE_HOME/work"
    )
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's seed)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i] (default auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default=None,
        help="as for train-dpo (default auto)",
    )
    p.add_argument("--report", help="training report JSON (default <work-dir>/report.json)")
    p.add_argument("--no-resume", action="store_true", help="ignore trainer checkpoints in the work dir")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    p.set_defaults(func=_cmd_train_online)
