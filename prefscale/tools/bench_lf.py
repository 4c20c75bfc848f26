"""Micro-benchmarks of the core library, run by `prefscale bench <name>`.

Each benchmark is a function returning a result object with `ok`, `to_dict()` (one JSON-able object, what
`--json` prints) and `summary_lines()` (the human-readable report). Only the step being measured sits inside
the timer: building the synthetic input and warming caches happen before it. A new benchmark adds its
function and result type here and one sub-command in `prefscale.commands.bench`.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from time import perf_counter
from typing import Any, Protocol

import numpy as np
import polars as pl

from prefscale.config.recipe import load_recipe
from prefscale.data import domain
from prefscale.labeling.apply import apply_lfs, snorkel_lfs

Progress = Callable[[str], None]


class BenchResult(Protocol):
    @property
    def ok(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...

    def summary_lines(self) -> list[str]: ...


def machine() -> dict[str, Any]:
    """What a timing depends on: CPU count and model, Python and the libraries on the measured paths."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:  # pragma: no cover - not Linux
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **{pkg: version(pkg) for pkg in ("polars", "pandas", "snorkel")},
    }


def _quiet(_: str) -> None:
    return None


# --- bench lf: vectorised polars LFs vs Snorkel's PandasLFApplier ------------------------------------------


def synthetic_responses(
    prompts: Sequence[str], tasks: Sequence[str], pick: Iterable[int], seed: int, unfinished_rate: float
) -> tuple[list[str], list[str]]:
    """One embedded-domain response per index in `pick` (of `prompts`/`tasks`), and its finish reason: about
    `unfinished_rate` of them are cut to a prefix, "length"; the rest "stop"."""
    rng = random.Random(seed)
    responses, finish = [], []
    for k in pick:
        text = domain.make_response(prompts[k], tasks[k], rng)
        if rng.random() < unfinished_rate:
            text = text[: rng.randint(1, max(1, len(text) - 1))]
            finish.append("length")
        else:
            finish.append("stop")
        responses.append(text)
    return responses, finish


def synthetic_candidates(rows: int, seed: int = 0, unfinished_rate: float = 0.05) -> pl.DataFrame:
    """`rows` candidates from the embedded Lumora domain, 5 per prompt as in the embedded recipe.

    Columns: `candidate_id, prompt_id, task_type, prompt, response, finish_reason`. About `unfinished_rate`
    of the rows were "cut at the token limit": `finish_reason` is "length" and the response is a prefix.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    pool = domain.make_prompt_pool(min(max(rows // 5, len(domain.TASK_TYPES)), 2000), seed)
    ids, tasks, prompts = (pool[c].to_list() for c in ("prompt_id", "task_type", "prompt"))
    pick = [i % len(prompts) for i in range(rows)]
    responses, finish = synthetic_responses(prompts, tasks, pick, seed, unfinished_rate)
    return pl.DataFrame(
        {
            "candidate_id": [f"c{i:07d}" for i in range(rows)],
            "prompt_id": [ids[k] for k in pick],
            "task_type": [tasks[k] for k in pick],
            "prompt": [prompts[k] for k in pick],
            "response": responses,
            "finish_reason": finish,
        }
    )


@dataclass(frozen=True)
class LFBenchResult:
    recipe: str
    rows: int
    lfs: int
    lf_names: tuple[str, ...]
    polars_seconds: float
    pandas_seconds: float
    equal: bool
    mismatch: str | None
    generate_seconds: float
    machine: dict[str, Any]

    @property
    def speedup(self) -> float:
        return self.pandas_seconds / self.polars_seconds if self.polars_seconds > 0 else float("inf")

    @property
    def ok(self) -> bool:
        return self.equal

    def to_dict(self) -> dict[str, Any]:
        out = {"bench": "lf", **asdict(self), "speedup": round(self.speedup, 2)}
        out["lf_names"] = list(self.lf_names)
        for k in ("polars_seconds", "pandas_seconds", "generate_seconds"):
            out[k] = round(out[k], 4)
        return out

    def summary_lines(self) -> list[str]:
        m = self.machine
        lines = [
            f"labeling functions: recipe {self.recipe!r}, {self.lfs} LFs, {self.rows} rows "
            f"(generated in {self.generate_seconds:.2f} s, not timed)",
            f"machine: {m['cpus']} CPUs ({m['cpu']}), python {m['python']}, polars {m['polars']}, "
            f"pandas {m['pandas']}, snorkel {m['snorkel']}",
            f"polars apply_lfs (vectorised):          {self.polars_seconds:9.3f} s",
            f"snorkel PandasLFApplier (row_vote):     {self.pandas_seconds:9.3f} s",
            f"speedup: {self.speedup:.1f}x",
            f"label matrices identical: {self.equal}",
        ]
        if self.mismatch:
            lines.append(f"first difference: {self.mismatch}")
        return lines


def _first_mismatch(ids: list[str], names: list[str], a: np.ndarray, b: np.ndarray) -> str | None:
    if a.shape != b.shape:
        return f"shape {a.shape} (polars) vs {b.shape} (snorkel)"
    diff = np.argwhere(a != b)
    if not len(diff):
        return None
    i, j = (int(v) for v in diff[0])
    return (
        f"candidate {ids[i]}, LF {names[j]!r}: polars {a[i, j]}, snorkel {b[i, j]} ({len(diff)} cells differ)"
    )


def bench_lf(
    rows: int = 100_000, recipe: str = "embedded", seed: int = 0, progress: Progress = _quiet
) -> LFBenchResult:
    """Label `rows` synthetic candidates with the recipe's LFs via `apply_lfs` and via Snorkel's
    `PandasLFApplier` over `snorkel_lfs`; time each application and compare the two label matrices."""
    from snorkel.labeling import PandasLFApplier  # heavy import, kept local

    lfs = list(load_recipe(recipe).labeling.functions)
    names = [lf.name for lf in lfs]
    progress(f"generating {rows} candidates from the embedded domain")
    t0 = perf_counter()
    data = synthetic_candidates(rows, seed)
    generate_seconds = perf_counter() - t0
    frame = data.to_pandas()
    slfs = snorkel_lfs(lfs)
    applier = PandasLFApplier(slfs)

    # Off the clock: one small pass each, so that one-off costs (translating and compiling each pattern for
    # `re`, starting polars' thread pool) are not charged to either side.
    warm = min(rows, 200)
    apply_lfs(data.head(warm), lfs)
    applier.apply(frame.head(warm), progress_bar=False)

    progress(f"polars: apply_lfs over {rows} rows")
    t0 = perf_counter()
    votes = apply_lfs(data, lfs)
    polars_seconds = perf_counter() - t0
    progress(f"snorkel: PandasLFApplier over {rows} rows (slow: one Python call per row and LF)")
    t0 = perf_counter()
    matrix = applier.apply(frame, progress_bar=False)
    pandas_seconds = perf_counter() - t0

    same_order = votes.columns[1:] == names and [f.name for f in slfs] == names
    ours = votes.select(names).to_numpy().astype(np.int64)
    mismatch = _first_mismatch(data["candidate_id"].to_list(), names, ours, np.asarray(matrix, np.int64))
    if mismatch is None and not same_order:
        mismatch = f"LF order differs: polars {votes.columns[1:]}, snorkel {[f.name for f in slfs]}"
    return LFBenchResult(
        recipe=recipe,
        rows=rows,
        lfs=len(lfs),
        lf_names=tuple(names),
        polars_seconds=polars_seconds,
        pandas_seconds=pandas_seconds,
        equal=mismatch is None,
        mismatch=mismatch,
        generate_seconds=generate_seconds,
        machine=machine(),
    )
