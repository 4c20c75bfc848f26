"""What `alpaca_eval_results` judges: each model's outputs against the reference, read from the artifact store.

- `heldout_comparisons` (reference `heldout_base`): the base against itself (trivially 50 %), the iteration's
  checkpoint (`eval_results` samples) and, when `best_of_n` holds samples made from the current checkpoint, the
  best-of-N choice, each paired with the base's samples (`eval_baseline`) by (prompt_id, sample_idx).
- `eval_set_comparisons` (`alpaca_eval` or a file): the base and the checkpoint each answer the set's
  instructions (one sample, the recipe's generation settings, the evaluation seed).

Each returns `EvalComparisons`: the comparisons, the artifact versions they read (the result's lineage), the
reference's generator name and extra parameters to record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from prefscale.artifacts import (
    ALPACA_EVAL_RESULTS,
    BASE_POLICY,
    BEST_OF_N,
    DPO_CHECKPOINT,
    EVAL_BASELINE,
    EVAL_PROMPTS,
    EVAL_RESULTS,
)
from prefscale.compute import Compute
from prefscale.config.evaluation import EvaluationConfig
from prefscale.config.generation import GenerationConfig
from prefscale.evaluation.eval_sets import eval_set_pairs, heldout_pairs, load_eval_set
from prefscale.evaluation.heldout import EVAL_SEED
from prefscale.evaluation.judges.run import Comparison
from prefscale.generation.sampling import sample_policy
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError


@dataclass(frozen=True)
class EvalComparisons:
    comparisons: list[Comparison]
    inputs: list[ArtifactRef]
    reference_generator: str
    extra: dict[str, Any] = field(default_factory=dict)


def unfinished_rate(samples: pl.DataFrame) -> float:
    """The share of samples cut at the token limit (`finish_reason == "length"`)."""
    return float((samples["finish_reason"] == "length").mean() or 0.0)


def best_of_n_samples(store: ArtifactStore, iteration: int) -> tuple[ArtifactRef, pl.DataFrame] | None:
    """Best-of-N held-out samples for the iteration, when `best_of_n` holds some made from the current checkpoint.

    None when it was never materialized, or was made from an older `dpo_checkpoint` version (stale).
    """
    try:
        ref = store.current(BEST_OF_N, str(iteration))
        ckpt = store.current(DPO_CHECKPOINT, str(iteration))
        manifest = store.manifest(ref)
    except (MissingArtifactError, ValueError):
        return None
    made_from = {(x["asset"], x["partition"]): x["version"] for x in manifest.get("inputs", [])}
    if made_from.get((ckpt.asset, ckpt.partition)) != ckpt.version:
        return None
    path = ref.file("samples.parquet")
    return (ref, pl.read_parquet(path)) if path.is_file() else None


def heldout_comparisons(store: ArtifactStore, iteration: int) -> EvalComparisons:
    """Base, checkpoint (and best-of-N) against the base's held-out samples; see the module docs."""
    base_ref = store.current(EVAL_BASELINE, UNPARTITIONED)
    res_ref = store.current(EVAL_RESULTS, str(iteration))
    base = pl.read_parquet(base_ref.file("samples.parquet"))
    ckpt = pl.read_parquet(res_ref.file("samples.parquet"))
    base_name = pl.read_parquet(base_ref.file("results.parquet"))["model"][0]
    ckpt_name = pl.read_parquet(res_ref.file("results.parquet"))["model"][0]
    comparisons = [
        Comparison("base", 0, base_name, heldout_pairs(base, base), unfinished_rate(base)),
        Comparison("checkpoint", iteration, ckpt_name, heldout_pairs(ckpt, base), unfinished_rate(ckpt)),
    ]
    inputs = [res_ref, base_ref, store.current(EVAL_PROMPTS, UNPARTITIONED)]
    bon = best_of_n_samples(store, iteration)
    if bon is not None:
        bon_ref, samples = bon
        name = f"{bon_ref.asset}[{iteration}]@{bon_ref.version}"
        comparisons.append(
            Comparison("best_of_n", iteration, name, heldout_pairs(samples, base), unfinished_rate(samples))
        )
        inputs.append(bon_ref)
    return EvalComparisons(comparisons, inputs, base_name)


def eval_set_comparisons(
    store: ArtifactStore,
    iteration: int,
    evaluation: EvaluationConfig,
    generation: GenerationConfig,
    compute: Compute,
    system: str | None = None,
) -> EvalComparisons:
    """The base and the checkpoint answer an external eval set's instructions (one sample each, the recipe's
    generation settings, `EVAL_SEED`), judged against its outputs."""
    es = load_eval_set(evaluation.reference, size=evaluation.eval_set_size)
    prompts = es.frame.select(
        "prompt_id", pl.col("instruction").alias("prompt"), pl.col("dataset").alias("task_type")
    )
    base = store.current(BASE_POLICY, UNPARTITIONED)
    ckpt = store.current(DPO_CHECKPOINT, str(iteration))
    comparisons = []
    for variant, it, ref in (("base", 0, base), ("checkpoint", iteration, ckpt)):
        samples = sample_policy(
            ref.path, compute, prompts, 1, generation, EVAL_SEED, system, label=f"eval set: {variant} answers"
        )
        name = f"{ref.asset}[{ref.partition}]@{ref.version}" if it else f"{ref.asset}@{ref.version}"
        comparisons.append(
            Comparison(variant, it, name, eval_set_pairs(es, samples), unfinished_rate(samples))
        )
    extra = {"eval_set": es.source, "eval_set_sha256": es.sha256, "eval_set_size": es.frame.height}
    return EvalComparisons(comparisons, [ckpt, base], es.generator, extra)


def results_across_iterations(
    store: ArtifactStore, metrics: pl.DataFrame, iteration: int, iterations: int
) -> pl.DataFrame:
    """This partition's metrics plus the other partitions' current checkpoint rows (the base once): the plot's data."""
    frames = [metrics]
    for p in range(1, iterations + 1):
        if p == iteration:
            continue
        try:
            other = store.read_frame(ALPACA_EVAL_RESULTS, str(p), "metrics")
        except (MissingArtifactError, FileNotFoundError):
            continue
        frames.append(other.filter(pl.col("variant") == "checkpoint"))
    return (
        pl.concat(frames, how="diagonal_relaxed")
        .filter(pl.col("variant").is_in(["base", "checkpoint"]))
        .unique(["iteration", "judge"], keep="first", maintain_order=True)
        .sort("judge", "iteration")
    )
