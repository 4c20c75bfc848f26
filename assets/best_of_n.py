"""`best_of_n`: the iteration's checkpoint with best-of-N at inference, evaluated like the plain checkpoint.

For the held-out prompts (`eval_prompts`) the checkpoint samples `evaluation.best_of_n` responses per evaluation
slot with the recipe's generation backend and the evaluation seed; the best by `evaluation.best_of_n_source`
(`prefscale.best_of_n`) is kept and judged by the SME rubric against the base's samples, as `eval_results` does
for the plain checkpoint. The `results` row carries `variant = best_of_n` and a generator name such as
`dpo-iter2+bo4`: `eval_leaderboard` (and `prefscale leaderboard`) shows it beside the plain `dpo-iter2`, and
`alpaca_eval_results` judges the kept samples as its `best_of_n` variant.
"""

import os
import time

import dagster as dg
import polars as pl

from assets.checkpoints import DPO_CHECKPOINT
from assets.evaluation import EVAL_BASELINE, EVAL_RESULTS, EVAL_SEED
from assets.partitions import ITERATIONS, iteration_of
from assets.prompts import EVAL_PROMPTS
from assets.reward_model import REWARD_MODEL
from prefscale.config.recipe import load_recipe
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, MissingArtifactError
from resources import ComputeResource, RecipeResource, StorageResource

BEST_OF_N = dg.AssetKey("best_of_n")


def best_of_n_if_enabled() -> list[dg.AssetKey]:
    """[best_of_n] when the recipe named by PREFSCALE_RECIPE (the one the graph is built for) enables it, else []."""
    recipe = load_recipe(os.environ.get("PREFSCALE_RECIPE", "embedded"))
    return [BEST_OF_N] if recipe.evaluation.best_of_n_enabled else []


def _deps() -> list[dg.AssetKey]:
    recipe = load_recipe(os.environ.get("PREFSCALE_RECIPE", "embedded"))
    extra = [REWARD_MODEL] if recipe.evaluation.best_of_n_source == "reward_model" else []
    # eval_results: not an input, but materialized first so the metadata compares with the plain checkpoint
    return [DPO_CHECKPOINT, EVAL_BASELINE, EVAL_PROMPTS, EVAL_RESULTS, *extra]


@dg.asset(
    key=BEST_OF_N,
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=_deps(),
    description="Best-of-N at inference: per held-out evaluation sample, N samples from the iteration's "
    "checkpoint and the best by the recipe's reward source, judged by the SME rubric against the base "
    "(leaderboard generator dpo-iter<i>+bo<N>).",
)
def best_of_n(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.evaluation.best_of_n import (
        generator_name,
        pool_with_slots,
        score_pool,
        select_best,
        selection_summary,
    )
    from prefscale.evaluation.heldout import evaluate
    from prefscale.generation.base import generation_stats
    from prefscale.generation.registry import make_backend
    from prefscale.rewards.sources import pairrm_model_ref

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    cfg, g = r.evaluation, r.generation
    if not cfg.best_of_n_enabled:
        raise dg.Failure(
            f"recipe {r.name!r} disables best-of-N (evaluation.best_of_n is {cfg.best_of_n!r}); set it to N >= 2"
        )
    n, slots, source = int(cfg.best_of_n), cfg.samples_per_prompt, cfg.best_of_n_source
    store = storage.store
    ckpt = store.current(DPO_CHECKPOINT.path[-1], str(i))
    prompts_ref = store.current(EVAL_PROMPTS.path[-1], UNPARTITIONED)
    base_ref = store.current(EVAL_BASELINE.path[-1], UNPARTITIONED)
    prompts = store.read_frame(EVAL_PROMPTS.path[-1], UNPARTITIONED)
    baseline = store.read_frame(EVAL_BASELINE.path[-1], UNPARTITIONED, "samples")
    inputs = [ckpt, base_ref, prompts_ref]
    dev = compute.resolve(r.policy.dtype) if g.backend != "endpoint" or source != "label_model" else None

    backend = make_backend(g, ckpt.path, dev, policy_iteration=i, system=r.policy.system_prompt)
    t0 = time.perf_counter()
    pool, info = backend.generate(prompts, slots * n, seed=EVAL_SEED)
    gen_seconds = time.perf_counter() - t0
    pool = pool_with_slots(pool, slots)

    rm_dir, model_ref = None, None
    if source == "reward_model":
        from prefscale.rewards.reward_model import ensure_reward_model

        rm_ref, _ = ensure_reward_model(store, r.reward.reward_model, r.seed, dev)
        inputs.append(rm_ref)
        rm_dir = rm_ref.path
    if source == "pairrm":
        model_ref = pairrm_model_ref(cfg.best_of_n_model, r.policy.source)
    scores = score_pool(
        pool,
        source,
        lfs=r.labeling.functions,
        label_model=r.labeling.label_model,
        seed=r.seed,
        reward_model_dir=rm_dir,
        compute=dev,
        pairrm_model=model_ref,
        device=dev.device if dev else "cpu",
    )
    selected = select_best(pool, scores)
    generator = generator_name(i, n)
    row, adh = evaluate(
        selected, baseline, iteration=i, model=f"dpo_checkpoint[{i}]@{ckpt.version}+bo{n}({source})"
    )
    row = row.with_columns(
        pl.lit("best_of_n").alias("variant"),
        pl.lit(generator).alias("generator"),
        pl.lit(n, dtype=pl.Int32).alias("best_of_n"),
        pl.lit(source).alias("best_of_n_source"),
    )
    params = {
        "best_of_n": n,
        "source": source,
        "model": model_ref,
        "samples_per_prompt": slots,
        "seed": EVAL_SEED,
        "label_model_seed": r.seed,
        "backend": g.backend,
        "sampling": {
            "max_new_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "stop": list(g.stop),
        },
        **system_params(r.policy.system_prompt),
    }
    scored_pool = pool.join(scores.select("candidate_id", pl.col("score").alias("reward")), on="candidate_id")
    # latencies are measurements, not content: beside the version (see ArtifactStore.write_measurements)
    ref = store.write_tables(
        BEST_OF_N.path[-1],
        str(i),
        {
            "samples": selected.drop("latency_s", strict=False),
            "pool": scored_pool.drop("latency_s", strict=False),
            "results": row,
        },
        inputs=inputs,
        params=params,
    )
    if "latency_s" in pool.columns:
        store.write_measurements(ref, pool.select("candidate_id", "latency_s"))

    rec = row.row(0, named=True)
    meta: dict[str, object] = {
        "generator": generator,
        "win_rate_vs_base": round(rec["win_rate"], 4),
        "mean_adherence": round(rec["mean_adherence"], 4),
        "avg_length": round(rec["avg_length"], 1),
        "unfinished_rate": round(rec["unfinished_rate"], 4),
        "n_total": rec["n_total"],
        "best_of_n": n,
        "source": source,
        "backend": info.backend,
        "pool_size": pool.height,
        **{k: round(v, 4) for k, v in selection_summary(selected, slots).items()},
        **{k: round(v, 4) for k, v in generation_stats(pool, gen_seconds).items() if k != "n_candidates"},
    }
    try:
        plain = store.read_frame(EVAL_RESULTS.path[-1], str(i), "results").row(0, named=True)
        meta["win_rate_plain"] = round(plain["win_rate"], 4)
        meta["win_rate_gain_over_plain"] = round(rec["win_rate"] - plain["win_rate"], 4)
        meta["adherence_gain_over_plain"] = round(rec["mean_adherence"] - plain["mean_adherence"], 4)
    except (MissingArtifactError, FileNotFoundError):
        context.log.info(f"eval_results[{i}] not materialized: no plain-checkpoint comparison in metadata")
    meta.update(
        {
            "adherence": dg.MetadataValue.md(markdown_table(adh.select("preference", "rate"))),
            "sample": dg.MetadataValue.md(
                markdown_table(selected.head(5).select("prompt_id", "chosen_sample", "reward", "response"))
            ),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        }
    )
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))
