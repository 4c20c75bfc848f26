"""`prefscale bench scale`: the pipeline's stages that need no model, at the scale a team reaches.

`rows` synthetic candidates from the embedded Lumora domain (5 per prompt, about 5 % cut at the token limit) are
published as iteration 1's `candidates` into a temporary `PREFSCALE_HOME`, then each stage runs as its asset
does, reading its inputs from the artifact store and publishing its output there:

| stage | core functions (as the asset calls them) |
|---|---|
| `lf_votes` | `apply_all_lfs_with_scores` over the recipe's row-wise LFs, `lf_catalog`, `lf_analysis` |
| `quality_labels` | `fit_label_model` (Snorkel), `lf_analysis` with its accuracies |
| `reward_scores` | `source_scores`, `combine_rewards` (the recipe's sources: the model-free `label_model`) |
| `preference_pairs` | `select_pairs` and the two blocking checks (`non_positive_margins`, `unknown_candidate_refs`) |
| `dbt_marts` | `dbt build` of `lf_summary`, `reward_distribution`, `pair_stats`, `lineage_audit`, their staging models and tests |

Each Python stage runs in a fresh interpreter (multiprocessing `spawn`), so its peak RSS (`VmHWM`) is its own: the
imports, the inputs read, the computation and the published output. Its seconds cover reading the inputs,
computing and publishing, not the imports nor one-off warm-ups (the label model's first fit imports
`torch._dynamo`: `warmup_seconds`). The dbt stage is one `dbt build` process, timed with its own peak RSS, after an
untimed `dbt parse` (the same for any size). The candidates are generated in a process of their own, off the clock.
Model-backed LFs (`labeling.model_functions`) and model reward sources are outside this benchmark.
"""

from __future__ import annotations

import importlib.util
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from time import perf_counter
from typing import Any

import polars as pl

from prefscale.config.recipe import load_recipe
from prefscale.data import domain
from prefscale.generation.base import CANDIDATE_SCHEMA
from prefscale.labeling.analysis import catalog_entries, lf_analysis, lf_catalog
from prefscale.labeling.apply import apply_all_lfs_with_scores
from prefscale.labeling.label_model import fit_label_model
from prefscale.pairs.checks import non_positive_margins, unknown_candidate_refs
from prefscale.pairs.selection import select_pairs
from prefscale.rewards.ensemble import combine_rewards
from prefscale.rewards.sources import source_scores
from prefscale.storage import ArtifactStore
from prefscale.tools.bench_lf import machine, synthetic_responses

Progress = Callable[[str], None]

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
DBT_SELECT = ("+lf_summary", "+reward_distribution", "+pair_stats", "+lineage_audit")
PYTHON_STAGES = ("lf_votes", "quality_labels", "reward_scores", "preference_pairs")
STAGES = (*PYTHON_STAGES, "dbt_marts")
CANDIDATES_PER_PROMPT = 5
PROMPT_TEXTS = 2000  # distinct prompt texts; prompt ids stay distinct (texts repeat above 10,000 candidates)
PARTITION = "1"
MODEL_FREE_SOURCES = ("label_model",)


def _quiet(_: str) -> None:
    return None


def _rss_mb(kilobytes: int) -> float:
    return round(kilobytes / 1024, 1)  # Linux reports ru_maxrss and VmHWM in KiB


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: `VmHWM`, the high-water mark of the program it runs (Linux).

    `ru_maxrss` (the fallback elsewhere) also counts the memory of the process it was forked from before `exec`,
    which would charge every child with its launcher's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return _rss_mb(int(line.split()[1]))
    except OSError:  # pragma: no cover - not Linux
        pass
    return _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # pragma: no cover


def scale_candidates(rows: int, seed: int = 0, unfinished_rate: float = 0.05) -> pl.DataFrame:
    """`rows` candidates in the `candidates` artifact's columns, `CANDIDATES_PER_PROMPT` per prompt id.

    Prompt texts come from a pool of up to `PROMPT_TEXTS` embedded Lumora prompts, reused under new prompt ids;
    each response is drawn for its prompt's text and task type. About `unfinished_rate` of the rows were "cut
    at the token limit": `finish_reason` is "length" and the response is a prefix.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    n_prompts = math.ceil(rows / CANDIDATES_PER_PROMPT)
    pool = domain.make_prompt_pool(min(max(n_prompts, len(domain.TASK_TYPES)), PROMPT_TEXTS), seed)
    tasks, texts = pool["task_type"].to_list(), pool["prompt"].to_list()
    pick = ((i // CANDIDATES_PER_PROMPT) % len(texts) for i in range(rows))
    responses, finish = synthetic_responses(texts, tasks, pick, seed, unfinished_rate)
    idx = pl.int_range(0, rows, eager=True)
    text_idx = (idx // CANDIDATES_PER_PROMPT) % len(texts)
    return (
        pl.DataFrame(
            {
                "candidate_id": [f"c{i:08d}" for i in range(rows)],
                "prompt_id": [f"s{i // CANDIDATES_PER_PROMPT:07d}" for i in range(rows)],
                "sample_idx": (idx % CANDIDATES_PER_PROMPT).cast(pl.Int32),
                "task_type": pool["task_type"].gather(text_idx),
                "prompt": pool["prompt"].gather(text_idx),
                "response": responses,
                "finish_reason": finish,
            }
        )
        .with_columns(
            pl.col("response").str.count_matches(r"\S+").alias("n_tokens"),  # words, standing in for tokens
            pl.lit(0.0).alias("latency_s"),
        )
        .select(list(CANDIDATE_SCHEMA))
        .cast(CANDIDATE_SCHEMA)
    )


@dataclass(frozen=True)
class StageResult:
    name: str
    seconds: float
    peak_rss_mb: float
    rows: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": self.peak_rss_mb,
            "rows": self.rows,
            **self.detail,
        }


@dataclass(frozen=True)
class ScaleBenchResult:
    recipe: str
    rows: int
    prompts: int
    seed: int
    stages: tuple[StageResult, ...]
    generate_seconds: float
    problems: tuple[str, ...]
    machine: dict[str, Any]

    @property
    def seconds(self) -> float:
        """The stages' seconds added up (the pipeline's time; generation and process start-up excluded)."""
        return sum(s.seconds for s in self.stages)

    @property
    def peak_rss_mb(self) -> float:
        """The largest stage peak: each stage runs in its own process, so this is what the machine must hold."""
        return max((s.peak_rss_mb for s in self.stages), default=0.0)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "bench": "scale",
            "recipe": self.recipe,
            "rows": self.rows,
            "prompts": self.prompts,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": self.peak_rss_mb,
            "stages": [s.to_dict() for s in self.stages],
            "generate_seconds": round(self.generate_seconds, 3),
            "ok": self.ok,
            "problems": list(self.problems),
            "machine": self.machine,
        }

    def summary_lines(self) -> list[str]:
        m = self.machine
        lines = [
            f"non-LLM stages at scale: recipe {self.recipe!r}, {self.rows} candidates, {self.prompts} prompts "
            f"(generated in {self.generate_seconds:.1f} s, not timed)",
            f"machine: {m['cpus']} CPUs ({m['cpu']}), python {m['python']}, polars {m['polars']}, "
            f"1-min load average at start and end {m.get('load_average_1m')}",
            f"{'stage':<18} {'seconds':>9} {'peak RSS MB':>12} {'rows':>10}",
        ]
        lines += [f"{s.name:<18} {s.seconds:9.2f} {s.peak_rss_mb:12.1f} {s.rows:10d}" for s in self.stages]
        lines.append(f"{'total':<18} {self.seconds:9.2f} {self.peak_rss_mb:12.1f}  (max of the stages)")
        lines += [f"problem: {p}" for p in self.problems]
        return lines


# --- the Python stages, each in its own process -----------------------------------------------------------


def _lf_votes(store: ArtifactStore, recipe: Any) -> tuple[int, dict[str, Any]]:
    cands_ref = store.current("candidates", PARTITION)
    cands = store.read_frame("candidates", PARTITION)
    t = perf_counter()
    lfs = list(recipe.labeling.functions)  # the row-wise kinds; model-backed ones need a model
    app = apply_all_lfs_with_scores(cands, lfs)
    votes = app.votes
    catalog = lf_catalog(lfs)
    lf_analysis(votes, lfs, None)  # the asset's metadata table
    compute = perf_counter() - t
    params = {"functions": catalog.select("lf_name", "kind", "version").to_dicts(), "models": {}}
    store.write_tables(
        "lf_votes", PARTITION, {"data": votes, "functions": catalog}, inputs=[cands_ref], params=params
    )
    return votes.height, {"compute_seconds": round(compute, 3), "lfs": len(lfs)}


def _quality_labels(store: ArtifactStore, recipe: Any) -> tuple[int, dict[str, Any]]:
    votes_ref = store.current("lf_votes", PARTITION)
    votes = store.read_frame("lf_votes", PARTITION)
    catalog = store.read_frame("lf_votes", PARTITION, "functions")
    names = catalog["lf_name"].to_list()
    versions = dict(zip(names, catalog["version"].to_list(), strict=True))
    lm = recipe.labeling.label_model
    t = perf_counter()
    res = fit_label_model(
        votes,
        names,
        **lm.fit_options(),
        seed=recipe.seed,
        versions=versions,
    )
    fit = perf_counter() - t
    analysis = lf_analysis(votes, catalog_entries(catalog), None, res.weights)
    analysis = analysis.with_columns(pl.lit(int(PARTITION), pl.Int32).alias("iteration")).select(
        "iteration", pl.all().exclude("iteration")
    )
    compute = perf_counter() - t
    params = {
        "label_model": "snorkel.LabelModel",
        **lm.model_dump(mode="json"),
        "seed": recipe.seed,
        "lf_accuracies": res.weights,
        "lf_versions": versions,
        "gold_rows": 0,
    }
    store.write_tables(
        "quality_labels",
        PARTITION,
        {"data": res.labels, "analysis": analysis},
        inputs=[votes_ref],
        params=params,
    )
    detail = {"compute_seconds": round(compute, 3), "fit_seconds": round(fit, 3)}
    return res.labels.height, {**detail, "share_high": round(res.class_balance[1], 4)}


def _reward_scores(store: ArtifactStore, recipe: Any) -> tuple[int, dict[str, Any]]:
    cands_ref = store.current("candidates", PARTITION)
    labels_ref = store.current("quality_labels", PARTITION)
    cands = store.read_frame("candidates", PARTITION)
    labels = store.read_frame("quality_labels", PARTITION)
    t = perf_counter()
    sources = recipe.reward.sources
    scores, matrix = source_scores(
        cands, labels, sources, policy_source=recipe.policy.source, seed=recipe.seed
    )
    rewards = combine_rewards(cands, scores, {s.source: s.weight for s in sources}, recipe.reward.ensemble)
    if matrix is not None:  # pragma: no cover - PairRM is a model source, refused before the stages run
        rewards = rewards.join(matrix, on="candidate_id", how="left")
    n_bad = rewards.filter(~pl.col("reward").is_finite()).height
    compute = perf_counter() - t
    params = {"source": "+".join(s.source for s in sources), "sources": [s.source for s in sources]}
    store.write_frame("reward_scores", PARTITION, rewards, inputs=[cands_ref, labels_ref], params=params)
    return rewards.height, {"compute_seconds": round(compute, 3), "non_finite": n_bad}


def _preference_pairs(store: ArtifactStore, recipe: Any) -> tuple[int, dict[str, Any]]:
    cands_ref = store.current("candidates", PARTITION)
    rewards_ref = store.current("reward_scores", PARTITION)
    cands = store.read_frame("candidates", PARTITION)
    rewards = store.read_frame("reward_scores", PARTITION)
    p = recipe.pairs
    seed = recipe.seed + int(PARTITION)
    t = perf_counter()
    sel = select_pairs(cands, rewards, **p.selection_options(), seed=seed, system=recipe.policy.system_prompt)
    select = perf_counter() - t
    store.write_tables(
        "preference_pairs",
        PARTITION,
        {"data": sel.pairs, "dropped": sel.dropped},
        inputs=[cands_ref, rewards_ref],
        params={**p.model_dump(mode="json"), "seed": seed},
    )
    bad_margins = non_positive_margins(
        sel.pairs,
        cands,
        unfinished_is_worst=p.unfinished_is_worst,
        length_penalty=p.length_penalty,
        length_slope=sel.length_slope,
    )
    bad_refs = unknown_candidate_refs(sel.pairs, cands)
    return sel.pairs.height, {
        "select_seconds": round(select, 3),
        "dropped_prompts": sel.dropped.height,
        "check_failures": bad_margins.height + bad_refs.height,
    }


_STAGE_FUNCTIONS = {
    "lf_votes": _lf_votes,
    "quality_labels": _quality_labels,
    "reward_scores": _reward_scores,
    "preference_pairs": _preference_pairs,
}


def _warm_label_model() -> None:
    """Off the clock: a fit on a few rows, whose first call imports Snorkel, torch's optimisers and
    `torch._dynamo` (about 3-5 s on 2 cores whatever the size)."""
    votes = pl.DataFrame({"candidate_id": ["a", "b", "c"], "x": [1, 0, -1], "y": [1, -1, 0], "z": [0, 1, 1]})
    fit_label_model(votes, ["x", "y", "z"], n_epochs=2)


def run_stage(name: str, home: str, recipe: str) -> dict[str, Any]:
    """Run one Python stage on the store at `home` (meant for a fresh process): seconds, rows, peak RSS."""
    r = load_recipe(recipe)
    store = ArtifactStore(home)
    t0 = perf_counter()
    if name == "quality_labels":
        _warm_label_model()
    warmup = perf_counter() - t0
    start_rss = peak_rss_mb()
    t0 = perf_counter()
    rows, detail = _STAGE_FUNCTIONS[name](store, r)
    seconds = perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": rows,
        "peak_rss_mb": peak_rss_mb(),
        "detail": {"start_rss_mb": start_rss, "warmup_seconds": round(warmup, 3), **detail},
    }


def publish_candidates(rows: int, seed: int, home: str) -> dict[str, Any]:
    """Generate `scale_candidates` and publish them as iteration 1's `candidates` (meant for a fresh process)."""
    t0 = perf_counter()
    cands = scale_candidates(rows, seed)
    ArtifactStore(home).write_frame("candidates", PARTITION, cands, params={"bench": "scale", "seed": seed})
    return {"seconds": perf_counter() - t0, "prompts": int(cands["prompt_id"].n_unique())}


def _in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`fn(*args)` in a new interpreter (multiprocessing `spawn`), so that its memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


# --- the dbt stage ------------------------------------------------------------------------------------------


# The `dbt` console script's body, run by this interpreter, which then records its own VmHWM: measured from the
# outside (`wait4`), a child's ru_maxrss would also count this process's memory from before the `exec`.
_DBT_MAIN = """
import os, sys
from dbt.cli.main import cli
sys.argv[0] = "dbt"
try:
    sys.exit(cli())
finally:
    with open("/proc/self/status") as f, open(os.environ["PREFSCALE_BENCH_PEAK_FILE"], "w") as out:
        out.write(next(ln.split()[1] for ln in f if ln.startswith("VmHWM:")))
"""


def dbt_command() -> list[str]:
    """How to start dbt: its entry point in this interpreter when it can import dbt and has `/proc` (then dbt
    reports its own peak memory), else the `dbt` beside this interpreter or on PATH."""
    if Path("/proc/self/status").exists() and importlib.util.find_spec("dbt.cli") is not None:
        return [sys.executable, "-c", _DBT_MAIN]
    local = Path(sys.executable).with_name("dbt")  # pragma: no cover - dbt not importable here
    return [str(local) if local.exists() else "dbt"]  # pragma: no cover


def _dbt(command: list[str], home: Path, work: Path) -> tuple[int, float, float]:
    """Run `dbt <command>` on the project with PREFSCALE_HOME=`home`: (exit code, seconds, peak RSS in MB).

    Its output goes to `work/dbt-<command>.log`.
    """
    peak_file = work / f"dbt-{command[0]}.peak"
    env = {
        **os.environ,
        "PREFSCALE_HOME": str(home),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "PREFSCALE_BENCH_PEAK_FILE": str(peak_file),
    }
    args = [
        *dbt_command(),
        *command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(work / "dbt-target"),
        "--log-path",
        str(work / "dbt-logs"),
    ]
    with (work / f"dbt-{command[0]}.log").open("w") as log:
        t0 = perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    peak = peak_file.read_text().strip() if peak_file.exists() else ""
    return proc.returncode, seconds, _rss_mb(int(peak) if peak else usage.ru_maxrss)


def _log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])


def _dbt_stage(home: Path, work: Path) -> tuple[StageResult, list[str]]:
    import duckdb  # only this stage reads the warehouse

    if not (DBT_PROJECT_DIR / "dbt_project.yml").is_file():
        raise FileNotFoundError(f"no dbt project at {DBT_PROJECT_DIR}")
    problems = []
    rc, parse_seconds, _ = _dbt(["parse", "--quiet"], home, work)  # off the clock: independent of the data
    if rc:
        problems.append(f"dbt parse failed ({rc}):\n{_log_tail(work / 'dbt-parse.log')}")
    rc, seconds, peak = _dbt(["build", "--select", *DBT_SELECT], home, work)
    detail: dict[str, Any] = {"parse_seconds": round(parse_seconds, 3)}
    rows = 0
    if rc:
        problems.append(f"dbt build failed ({rc}):\n{_log_tail(work / 'dbt-build.log')}")
    else:
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
            q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
            rows = int(q("select count(*) from stg_candidates"))
            detail["pair_stats_pairs"] = int(q("select coalesce(sum(pairs), 0) from pair_stats"))
            detail["reward_distribution_n"] = int(q("select coalesce(sum(n), 0) from reward_distribution"))
            detail["lf_summary_rows"] = int(q("select count(*) from lf_summary"))
    return StageResult("dbt_marts", seconds, peak, rows, detail), problems


# --- the benchmark ------------------------------------------------------------------------------------------


def _consistency(rows: int, stages: dict[str, StageResult]) -> list[str]:
    """Row counts that must agree between the stages and the marts."""
    problems = [
        f"{name}: {stages[name].rows} rows, expected {rows}"
        for name in ("lf_votes", "quality_labels", "reward_scores")
        if stages[name].rows != rows
    ]
    if stages["reward_scores"].detail.get("non_finite"):
        problems.append(
            f"reward_scores: {stages['reward_scores'].detail['non_finite']} rewards are not finite"
        )
    pairs = stages["preference_pairs"]
    if pairs.detail.get("check_failures"):
        problems.append(f"preference_pairs: {pairs.detail['check_failures']} pairs fail the blocking checks")
    dbt = stages["dbt_marts"]
    if dbt.rows:  # the build succeeded
        expected = {
            "rows": rows,
            "pair_stats_pairs": pairs.rows,
            "reward_distribution_n": rows,
            "lf_summary_rows": stages["lf_votes"].detail["lfs"],
        }
        got = {"rows": dbt.rows, **dbt.detail}
        problems += [f"dbt_marts: {k} = {got[k]}, expected {v}" for k, v in expected.items() if got[k] != v]
    return problems


def _check_recipe(recipe: str) -> None:
    r = load_recipe(recipe)
    model_sources = [s.source for s in r.reward.sources if s.source not in MODEL_FREE_SOURCES]
    if model_sources:
        raise ValueError(
            f"recipe {recipe!r}: reward sources {model_sources} need a model; this benchmark runs only the "
            f"model-free ones ({', '.join(MODEL_FREE_SOURCES)})"
        )
    if r.labeling.task_classifier is not None:
        raise ValueError(f"recipe {recipe!r} classifies task types with a model; this benchmark needs none")


def bench_scale(
    rows: int = 1_000_000,
    recipe: str = "embedded",
    seed: int = 0,
    work_dir: Path | str | None = None,
    progress: Progress = _quiet,
) -> ScaleBenchResult:
    """Run the model-free stages and the dbt marts on `rows` synthetic candidates (see the module docstring).

    Everything is written under a temporary folder in `work_dir` (default: the system's temp dir), removed at
    the end.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    _check_recipe(recipe)
    load_start = _load_1m()
    work = Path(tempfile.mkdtemp(prefix="prefscale-bench-scale-", dir=work_dir))
    try:
        home = work / "home"
        progress(f"generating {rows} candidates from the embedded domain (not timed)")
        made = _in_fresh_process(publish_candidates, rows, seed, str(home))
        stages: dict[str, StageResult] = {}
        for name in PYTHON_STAGES:
            progress(f"{name}: in a fresh process")
            out = _in_fresh_process(run_stage, name, str(home), recipe)
            stages[name] = StageResult(name, out["seconds"], out["peak_rss_mb"], out["rows"], out["detail"])
            progress(f"{name}: {stages[name].seconds:.2f} s, peak RSS {stages[name].peak_rss_mb:.0f} MB")
        progress("dbt_marts: dbt parse (not timed), then dbt build")
        stages["dbt_marts"], problems = _dbt_stage(home, work)
        progress(
            f"dbt_marts: {stages['dbt_marts'].seconds:.2f} s, peak RSS {stages['dbt_marts'].peak_rss_mb:.0f} MB"
        )
        problems += _consistency(rows, stages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ScaleBenchResult(
        recipe=recipe,
        rows=rows,
        prompts=made["prompts"],
        seed=seed,
        stages=tuple(stages[n] for n in STAGES),
        generate_seconds=made["seconds"],
        problems=tuple(problems),
        machine={**machine(), "memory_gib": _memory_gib(), "load_average_1m": [load_start, _load_1m()]},
    )


def _load_1m() -> float | None:
    """The 1-minute load average (other work on the machine makes the timings noisy)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - not available
        return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):  # pragma: no cover - not POSIX
        return None
