"""`alpaca_eval_results`: each iteration's checkpoint (and the base) judged against a reference by several judges.

The judges (`evaluation.judges`) annotate in alpaca_eval's format and the metrics come from alpaca_eval's own
functions (`prefscale.judges`, `prefscale.alpacaeval`). The reference (`evaluation.reference`):

- `heldout_base` (the embedded recipe): the held-out prompts (`eval_prompts`), the checkpoint's samples from
  `eval_results` against the base's samples from `eval_baseline`, paired by (prompt_id, sample_idx). The base
  row (iteration 0) is trivially 50 % here: every pair is the base against itself.
- `alpaca_eval` or a file: the checkpoint and the base each answer the set's instructions (one sample each,
  the recipe's generation settings, the evaluation seed), judged against the reference outputs; the base row
  is then a real measurement.

Every partition also writes the base's rows (iteration 0); `eval_leaderboard` keeps one copy. Best-of-N: when the
`best_of_n` asset holds the iteration's best-of-N held-out samples (table `samples`, the columns of
`eval_results`' samples) made from the current checkpoint, they are judged too (reference `heldout_base`), as
variant `best_of_n`.
"""

import dagster as dg
import polars as pl

from assets.best_of_n import BEST_OF_N, best_of_n_if_enabled
from assets.checkpoints import DPO_CHECKPOINT
from assets.evaluation import EVAL_BASELINE, EVAL_RESULTS, EVAL_SEED
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from assets.prompts import EVAL_PROMPTS
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, ArtifactRef, ArtifactStore, MissingArtifactError
from resources import ComputeResource, MLflowResource, RecipeResource, StorageResource

ALPACA_EVAL_RESULTS = dg.AssetKey("alpaca_eval_results")
BEST_OF_N_ASSET = BEST_OF_N.path[-1]
"""The best-of-N asset (`assets.best_of_n`): partitioned by iteration, with a `samples` table."""

SHOWN = [
    "variant",
    "iteration",
    "model",
    "win_rate",
    "standard_error",
    "lc_win_rate",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "avg_length",
]


def best_of_n_samples(store: ArtifactStore, iteration: int) -> tuple[ArtifactRef, pl.DataFrame] | None:
    """Best-of-N held-out samples for the iteration, when `best_of_n` holds some made from the current checkpoint.

    None when it was never materialized, or was made from an older `dpo_checkpoint` version (stale).
    """
    try:
        ref = store.current(BEST_OF_N_ASSET, str(iteration))
        ckpt = store.current(DPO_CHECKPOINT.path[-1], str(iteration))
        manifest = store.manifest(ref)
    except (MissingArtifactError, ValueError):
        return None
    made_from = {(x["asset"], x["partition"]): x["version"] for x in manifest.get("inputs", [])}
    if made_from.get((ckpt.asset, ckpt.partition)) != ckpt.version:
        return None
    path = ref.file("samples.parquet")
    return (ref, pl.read_parquet(path)) if path.is_file() else None


def _unfinished(samples: pl.DataFrame) -> float:
    return float((samples["finish_reason"] == "length").mean() or 0.0)


def _heldout_comparisons(store: ArtifactStore, i: int):
    from prefscale.evaluation.eval_sets import heldout_pairs
    from prefscale.evaluation.judges.run import Comparison

    base_ref = store.current(EVAL_BASELINE.path[-1], UNPARTITIONED)
    res_ref = store.current(EVAL_RESULTS.path[-1], str(i))
    base = pl.read_parquet(base_ref.file("samples.parquet"))
    ckpt = pl.read_parquet(res_ref.file("samples.parquet"))
    base_name = pl.read_parquet(base_ref.file("results.parquet"))["model"][0]
    ckpt_name = pl.read_parquet(res_ref.file("results.parquet"))["model"][0]
    comparisons = [
        Comparison("base", 0, base_name, heldout_pairs(base, base), _unfinished(base)),
        Comparison("checkpoint", i, ckpt_name, heldout_pairs(ckpt, base), _unfinished(ckpt)),
    ]
    inputs = [res_ref, base_ref, store.current(EVAL_PROMPTS.path[-1], UNPARTITIONED)]
    bon = best_of_n_samples(store, i)
    if bon is not None:
        bon_ref, samples = bon
        name = f"{bon_ref.asset}[{i}]@{bon_ref.version}"
        comparisons.append(
            Comparison("best_of_n", i, name, heldout_pairs(samples, base), _unfinished(samples))
        )
        inputs.append(bon_ref)
    return comparisons, inputs, base_name, {}


def _eval_set_comparisons(store: ArtifactStore, i: int, r, compute: ComputeResource):
    """The base and the checkpoint answer an external eval set's instructions (one sample each)."""
    from prefscale.evaluation.eval_sets import eval_set_pairs, load_eval_set
    from prefscale.evaluation.judges.run import Comparison
    from prefscale.generation.sampling import sample_policy

    cfg = r.evaluation
    es = load_eval_set(cfg.reference, size=cfg.eval_set_size)
    prompts = es.frame.select(
        "prompt_id", pl.col("instruction").alias("prompt"), pl.col("dataset").alias("task_type")
    )
    g, dev = r.generation, compute.resolve()
    comparisons = []
    base = store.current(BASE_POLICY.path[-1], UNPARTITIONED)
    ckpt = store.current(DPO_CHECKPOINT.path[-1], str(i))
    for variant, it, ref in (("base", 0, base), ("checkpoint", i, ckpt)):
        samples = sample_policy(ref.path, dev, prompts, 1, g, EVAL_SEED)
        name = f"{ref.asset}[{ref.partition}]@{ref.version}" if it else f"{ref.asset}@{ref.version}"
        comparisons.append(Comparison(variant, it, name, eval_set_pairs(es, samples), _unfinished(samples)))
    extra = {"eval_set": es.source, "eval_set_sha256": es.sha256, "eval_set_size": es.frame.height}
    return comparisons, [ckpt, base], es.generator, extra


def _plot_frame(store: ArtifactStore, metrics: pl.DataFrame, i: int, iterations: int) -> pl.DataFrame:
    """This partition's rows plus the other partitions' current ones (checkpoint rows; the base once)."""
    frames = [metrics]
    for p in range(1, iterations + 1):
        if p == i:
            continue
        try:
            other = store.read_frame(ALPACA_EVAL_RESULTS.path[-1], str(p), "metrics")
        except (MissingArtifactError, FileNotFoundError):
            continue
        frames.append(other.filter(pl.col("variant") == "checkpoint"))
    return (
        pl.concat(frames, how="diagonal_relaxed")
        .filter(pl.col("variant").is_in(["base", "checkpoint"]))
        .unique(["iteration", "judge"], keep="first", maintain_order=True)
        .sort("judge", "iteration")
    )


@dg.asset(
    key=ALPACA_EVAL_RESULTS,
    group_name="evaluation",
    kinds={"parquet", "mlflow"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[EVAL_RESULTS, EVAL_BASELINE, EVAL_PROMPTS, *best_of_n_if_enabled()],
    description="The iteration's checkpoint and the base judged against the reference (held-out base samples, "
    "AlpacaEval's GPT-4 Turbo outputs, or a file) by each judge of the recipe, in alpaca_eval's annotation "
    "format; AlpacaEval metrics per judge (win rate, standard error, LC win rate, counts, length) on 0-1.",
)
def alpaca_eval_results(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
    mlflow: MLflowResource,
) -> dg.MaterializeResult:
    from importlib.metadata import version

    from prefscale.evaluation.alpaca_metrics import LC_VARIANT
    from prefscale.evaluation.eval_sets import HELDOUT_BASE
    from prefscale.evaluation.judges.registry import make_judges
    from prefscale.evaluation.judges.run import run_judges
    from prefscale.lineage import eval_runs as eval_lineage
    from prefscale.lineage.mlflow_runs import run_url

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    cfg = r.evaluation
    store = storage.store
    base_policy = store.current(BASE_POLICY.path[-1], UNPARTITIONED)
    dev = compute.resolve() if {"pairrm", "local_llm"} & set(cfg.all_judges) else None
    # made first: a judge that cannot run (e.g. no OPENAI_API_KEY) fails the step before any work
    judges = make_judges(
        cfg.all_judges,
        cfg,
        lfs=r.labeling.functions,
        label_model=r.labeling.label_model,
        seed=r.seed,
        compute=dev,
        cache_dir=store.home / "cache",
        local_llm_model=base_policy.path,
    )
    if cfg.reference == HELDOUT_BASE:
        comparisons, inputs, ref_generator, extra = _heldout_comparisons(store, i)
        reference = HELDOUT_BASE
    else:
        comparisons, inputs, ref_generator, extra = _eval_set_comparisons(store, i, r, compute)
        reference = "alpaca_eval" if cfg.reference == "alpaca_eval" else "file"
    if "local_llm" in cfg.all_judges and cfg.local_llm_model is None and base_policy not in inputs:
        inputs.append(base_policy)
    annotations, metrics = run_judges(
        judges,
        comparisons,
        reference=reference,
        reference_generator=ref_generator,
        source_partition=str(i),
    )
    params = {
        "judges": list(cfg.all_judges),
        "annotators": [j.annotator for j in judges],
        "reference": cfg.reference,
        "annotator_config": cfg.annotator_config,
        "pairrm_model": cfg.pairrm_model,
        "local_llm_model": cfg.local_llm_model or f"base_policy@{base_policy.version}",
        "lc_variant": LC_VARIANT,
        "alpaca_eval": version("alpaca-eval"),
        "seed": r.seed,
        "eval_seed": EVAL_SEED,
        "label_model": r.labeling.label_model.model_dump(mode="json"),
        "lfs": {lf.name: lf.version for lf in r.labeling.functions},
        **extra,
    }
    tables = {"metrics": metrics, **{f"annotations_{label}": df for label, df in annotations.items()}}
    ref = store.write_tables(ALPACA_EVAL_RESULTS.path[-1], str(i), tables, inputs=inputs, params=params)

    plot_data = _plot_frame(store, metrics, i, r.iterations)
    png = eval_lineage.results_png(plot_data, title=f"alpaca_eval_results (reference: {reference})")
    uri = mlflow.uri(storage.root)
    run_id = eval_lineage.log_eval_run(
        uri,
        mlflow.experiment,
        storage.root / "mlruns",
        run_name=f"{eval_lineage.RUN_PREFIX}{i}",
        params={**{k: v for k, v in params.items() if k not in {"label_model", "lfs"}}, "iteration": i},
        metrics=eval_lineage.flat_metrics(
            metrics, ["win_rate", "standard_error", "lc_win_rate", "avg_length", "n_total"]
        ),
        tags={
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": ALPACA_EVAL_RESULTS.to_user_string(),
            "dagster.partition": str(i),
            "alpaca_eval_results.sha256": ref.digest,
            "alpaca_eval_results.version": ref.version,
        },
        files={
            "alpaca_eval_results.png": png,
            "metrics.json": eval_lineage.metrics_json(metrics),
        },
    )

    meta: dict[str, object] = {}
    for label in annotations:
        rows = metrics.filter(pl.col("judge") == label).select(SHOWN)
        meta[f"judge_{label}"] = dg.MetadataValue.md(markdown_table(rows))
        ckpt_row = rows.filter(pl.col("variant") == "checkpoint")
        for col in ("win_rate", "lc_win_rate"):
            value = ckpt_row[col][0] if ckpt_row.height else None
            if value is not None:
                meta[f"{col}_{label}"] = round(float(value), 4)
    return dg.MaterializeResult(
        metadata={
            **meta,
            "reference": reference,
            "plot": dg.MetadataValue.md(eval_lineage.png_markdown(png, "alpaca_eval_results per iteration")),
            "n_annotations": sum(df.height for df in annotations.values()),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(run_url(uri, run_id)),
        },
        data_version=dg.DataVersion(ref.version),
    )
