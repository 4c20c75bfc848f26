"""`prefscale bench <name>`: micro-benchmarks of the core library (`prefscale.bench`).

Each benchmark is a sub-command of `bench`. `--json` makes the last stdout line one JSON object; progress
goes to stderr. The exit code is 1 when a benchmark's own check fails (e.g. the two label matrices differ).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from prefscale.report import print_bench_result


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _report(result: Any, as_json: bool) -> int:
    return print_bench_result(result, as_json)


def _run_bench(
    as_json: bool, errors: tuple[type[Exception], ...], bench: Callable[..., Any], *args: Any, **kwargs: Any
) -> int:
    """Run `bench` with progress on stderr; a bad input (one of `errors`) exits 2 with its message."""
    try:
        result = bench(*args, progress=_progress, **kwargs)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _report(result, as_json)


def _seed_json_and_run(p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=run)


def _run_lf(args: argparse.Namespace) -> int:
    from prefscale.tools.bench_lf import bench_lf  # lazy: CLI start-up

    return _report(
        bench_lf(rows=args.rows, recipe=args.recipe, seed=args.seed, progress=_progress), args.json
    )


def _add_lf(benches: Any) -> None:
    p = benches.add_parser(
        "lf",
        help="vectorised polars LFs (apply_lfs) vs Snorkel's PandasLFApplier: timings, speedup, equal matrices",
    )
    p.add_argument(
        "--rows", type=_positive_int, default=100_000, help="synthetic candidates (default 100000)"
    )
    p.add_argument("--recipe", default="embedded", help="recipe whose LFs are applied (default embedded)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic candidates (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    p.set_defaults(func=_run_lf)


def _run_generate(args: argparse.Namespace) -> int:
    from prefscale.tools.bench_generate import (
        CudaUnavailable,
        bench_generate,
        bench_generate_gpu,
    )  # lazy: CLI start-up

    errors = (CudaUnavailable, ValueError)
    if args.preset == "tiny":
        return _run_bench(
            args.json,
            errors,
            bench_generate,
            prompts=args.prompts or 32,
            samples=args.samples or 5,
            max_new_tokens=args.max_new_tokens or 64,
            batch_size=args.batch_size,
            sequential_prompts=args.sequential_prompts,
            seed=args.seed,
            threads=args.threads,
        )
    return _run_bench(
        args.json,
        errors,
        bench_generate_gpu,
        args.preset,
        prompts=args.prompts or 64,
        samples=args.samples or 5,
        max_new_tokens=args.max_new_tokens or 256,
        seed=args.seed,
    )


def _add_generate(benches: Any) -> None:
    p = benches.add_parser(
        "generate",
        help="candidate generation: batched vs one at a time (tiny, CPU), or tokens/s vs the decode bound "
        "(mistral-7b, CUDA)",
    )
    p.add_argument(
        "--preset",
        choices=["tiny", "mistral-7b"],
        default="tiny",
        help="tiny: embedded-shaped random model on CPU (default); mistral-7b: random bf16 weights on CUDA",
    )
    p.add_argument("--prompts", type=_positive_int, help="prompts (default 32 tiny, 64 mistral-7b)")
    p.add_argument("--samples", type=_positive_int, help="samples per prompt (default 5)")
    p.add_argument(
        "--max-new-tokens", type=_positive_int, help="new tokens (default 64 tiny, 256 mistral-7b)"
    )
    p.add_argument("--batch-size", type=_positive_int, default=80, help="tiny: batch size (default 80)")
    p.add_argument(
        "--sequential-prompts",
        type=_positive_int,
        default=4,
        help="tiny: prompts generated one sample at a time for the baseline rate (default 4)",
    )
    p.add_argument("--threads", type=_positive_int, help="tiny: torch CPU threads (default torch's)")
    _seed_json_and_run(p, _run_generate)


def _run_dtype(args: argparse.Namespace) -> int:
    from prefscale.tools.bench_dtype import bench_dtype  # lazy: CLI start-up

    return _run_bench(
        args.json,
        (ValueError,),
        bench_dtype,
        args.shape,
        batch=args.batch,
        seq_len=args.seq_len,
        steps=args.steps,
        prompts=args.prompts,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def _add_dtype(benches: Any) -> None:
    p = benches.add_parser(
        "dtype",
        help="bf16 vs fp32 on this CPU: a training step and batched generation on a SmolLM2-135M-shaped model",
    )
    p.add_argument(
        "--shape",
        choices=["smollm2-135m", "tiny"],
        default="smollm2-135m",
        help="model shape (default smollm2-135m; tiny: the embedded policy's)",
    )
    p.add_argument("--batch", type=_positive_int, default=8, help="training sequences per step (default 8)")
    p.add_argument(
        "--seq-len", type=_positive_int, default=320, help="training tokens per sequence (default 320)"
    )
    p.add_argument("--steps", type=_positive_int, default=3, help="timed training steps (default 3)")
    p.add_argument("--prompts", type=_positive_int, default=64, help="generation batch (default 64)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=32, help="new tokens (default 32)")
    _seed_json_and_run(p, _run_dtype)


def _run_candidates(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from prefscale.config.base import RecipeError  # lazy: CLI start-up
    from prefscale.tools.bench_candidates import bench_candidates  # lazy: CLI start-up

    work = (
        Path(args.work_dir) if args.work_dir else Path(tempfile.gettempdir()) / "prefscale-bench-candidates"
    )
    return _run_bench(
        args.json,
        (RecipeError, ValueError),
        bench_candidates,
        args.recipe,
        work_dir=work,
        prompts=args.prompts,
        samples=args.samples,
        seed=args.seed,
    )


def _add_candidates(benches: Any) -> None:
    p = benches.add_parser(
        "candidates",
        help="the candidates step on a real policy: the backend's decoding loop vs model.generate (tokens/s, "
        "same texts, fraction of the matmul peak)",
    )
    p.add_argument(
        "--recipe", default="smollm2-lumora", help="recipe with a real policy (default smollm2-lumora)"
    )
    p.add_argument("--prompts", type=_positive_int, default=16, help="prompts (default 16)")
    p.add_argument(
        "--samples", type=_positive_int, help="samples per prompt (default: the recipe's candidates)"
    )
    p.add_argument(
        "--work-dir", help="where the converted policy is kept between runs (default: the temp dir)"
    )
    _seed_json_and_run(p, _run_candidates)


def _run_scale(args: argparse.Namespace) -> int:
    from prefscale.config.base import RecipeError  # lazy: CLI start-up
    from prefscale.tools.bench_scale import bench_scale  # lazy: CLI start-up

    return _run_bench(
        args.json,
        (RecipeError, ValueError, FileNotFoundError),
        bench_scale,
        rows=args.rows,
        recipe=args.recipe,
        seed=args.seed,
        work_dir=args.work_dir,
    )


def _add_scale(benches: Any) -> None:
    p = benches.add_parser(
        "scale",
        help="the stages that need no model (lf_votes, quality_labels, reward_scores, preference_pairs) and the "
        "dbt marts on N synthetic candidates: seconds and peak memory per stage",
    )
    p.add_argument(
        "--rows", type=_positive_int, default=1_000_000, help="synthetic candidates (default 1000000)"
    )
    p.add_argument("--recipe", default="embedded", help="recipe whose stages run (default embedded)")
    p.add_argument("--work-dir", help="where the temporary PREFSCALE_HOME is made (default: the temp dir)")
    _seed_json_and_run(p, _run_scale)


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="micro-benchmarks (timings and ratios of core steps)")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    _add_lf(benches)
    _add_generate(benches)
    _add_dtype(benches)
    _add_candidates(benches)
    _add_scale(benches)
    from prefscale.tools.bench_dpo import add_parser as add_dpo  # lazy: CLI start-up

    add_dpo(benches)
