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

from assets.annotations import sme_votes
from assets.best_of_n import best_of_n_if_enabled
from assets.evaluation import EVAL_BASELINE, EVAL_RESULTS
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from assets.prompts import EVAL_PROMPTS
from prefscale.evaluation.heldout import EVAL_SEED
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED
from resources import ComputeResource, MLflowResource, RecipeResource, StorageResource

ALPACA_EVAL_RESULTS = dg.AssetKey("alpaca_eval_results")

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
    from prefscale.evaluation.comparisons import (
        eval_set_comparisons,
        heldout_comparisons,
        results_across_iterations,
    )
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
    dev = compute.resolve(r.policy.dtype) if {"pairrm", "local_llm"} & set(cfg.all_judges) else None
    votes = sme_votes(store) if "sme" in cfg.all_judges else None
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
        sme_votes=votes[1] if votes else None,
    )
    if cfg.reference == HELDOUT_BASE:
        compared = heldout_comparisons(store, i)
        reference = HELDOUT_BASE
    else:
        dev = compute.resolve(r.policy.dtype)
        compared = eval_set_comparisons(store, i, cfg, r.generation, dev, r.policy.system_prompt)
        reference = "alpaca_eval" if cfg.reference == "alpaca_eval" else "file"
    inputs = compared.inputs
    if "local_llm" in cfg.all_judges and cfg.local_llm_model is None and base_policy not in inputs:
        inputs.append(base_policy)
    if votes:
        inputs.append(votes[0])
    annotations, metrics = run_judges(
        judges,
        compared.comparisons,
        reference=reference,
        reference_generator=compared.reference_generator,
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
        **compared.extra,
        **system_params(r.policy.system_prompt),
    }
    tables = {"metrics": metrics, **{f"annotations_{label}": df for label, df in annotations.items()}}
    ref = store.write_tables(ALPACA_EVAL_RESULTS.path[-1], str(i), tables, inputs=inputs, params=params)

    plot_data = results_across_iterations(store, metrics, i, r.iterations)
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
            **mlflow.run_tags(context, ALPACA_EVAL_RESULTS),
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
    preview = eval_lineage.results_preview(plot_data)  # first: small enough to show in place
    return dg.MaterializeResult(
        metadata={
            **({"plot_preview": dg.MetadataValue.md(preview)} if preview else {}),
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
