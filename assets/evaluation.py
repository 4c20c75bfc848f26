"""`eval_baseline` and `eval_results`: held-out adherence, length, and rubric-judge win rate vs the base."""

import dagster as dg

from assets.checkpoints import DPO_CHECKPOINT
from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from assets.prompts import EVAL_PROMPTS
from prefscale.evaluation.heldout import EVAL_SEED
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, ArtifactRef
from resources import ComputeResource, RecipeResource, StorageResource

EVAL_BASELINE = dg.AssetKey("eval_baseline")
EVAL_RESULTS = dg.AssetKey("eval_results")


def _sample(policy: ArtifactRef, storage: StorageResource, recipe: RecipeResource, compute: ComputeResource):
    from prefscale.generation.sampling import sample_policy

    r = recipe.load()
    prompts = storage.store.read_frame(EVAL_PROMPTS.path[-1], UNPARTITIONED)
    n = r.evaluation.samples_per_prompt
    dev = compute.resolve(r.policy.dtype)
    label = f"held-out sampling {policy.asset}[{policy.partition}]"
    return sample_policy(policy.path, dev, prompts, n, r.generation, EVAL_SEED, r.policy.system_prompt, label)


def _eval_params(recipe: RecipeResource) -> dict[str, object]:
    r = recipe.load()
    return {
        "judge": "rubric",  # eval_results is always the rubric's record, whichever judge leads the leaderboard
        "samples_per_prompt": r.evaluation.samples_per_prompt,
        "seed": EVAL_SEED,
        **system_params(r.policy.system_prompt),
    }


def _result(ref: ArtifactRef, row, adh, samples) -> dg.MaterializeResult:
    rec = row.row(0, named=True)
    return dg.MaterializeResult(
        metadata={
            "win_rate_vs_base": round(rec["win_rate"], 4),
            "mean_adherence": round(rec["mean_adherence"], 4),
            "avg_length": round(rec["avg_length"], 1),
            "unfinished_rate": round(rec["unfinished_rate"], 4),
            "n_total": rec["n_total"],
            "adherence": dg.MetadataValue.md(markdown_table(adh.select("preference", "rate"))),
            "sample": dg.MetadataValue.md(markdown_table(samples.head(5).select("prompt", "response"))),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
    )


@dg.asset(
    key=EVAL_BASELINE,
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version="1",
    pool="gpu",
    deps=[BASE_POLICY, EVAL_PROMPTS],
    description="The base policy's samples on the held-out prompts (the reference every checkpoint is judged "
    "against) and its adherence: the leaderboard's iteration 0.",
)
def eval_baseline(
    storage: StorageResource, recipe: RecipeResource, compute: ComputeResource
) -> dg.MaterializeResult:
    from prefscale.evaluation.heldout import evaluate

    base = storage.store.current(BASE_POLICY.path[-1], UNPARTITIONED)
    samples = _sample(base, storage, recipe, compute)
    row, adh = evaluate(samples, samples, iteration=0, model=f"base_policy@{base.version}")
    prompts = storage.store.current(EVAL_PROMPTS.path[-1], UNPARTITIONED)
    ref = storage.store.write_tables(
        EVAL_BASELINE.path[-1],
        UNPARTITIONED,
        {"samples": samples, "results": row},
        inputs=[base, prompts],
        params=_eval_params(recipe),
    )
    return _result(ref, row, adh, samples)


@dg.asset(
    key=EVAL_RESULTS,
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[DPO_CHECKPOINT, EVAL_BASELINE, EVAL_PROMPTS],
    description="The checkpoint's held-out samples judged by the SME rubric against the base's samples (win "
    "rate), plus per-preference adherence and average length.",
)
def eval_results(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.evaluation.heldout import evaluate

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    ckpt = store.current(DPO_CHECKPOINT.path[-1], str(i))
    baseline = store.read_frame(EVAL_BASELINE.path[-1], UNPARTITIONED, "samples")
    samples = _sample(ckpt, storage, recipe, compute)
    row, adh = evaluate(samples, baseline, iteration=i, model=f"dpo_checkpoint[{i}]@{ckpt.version}")
    inputs = [
        ckpt,
        store.current(EVAL_BASELINE.path[-1], UNPARTITIONED),
        store.current(EVAL_PROMPTS.path[-1], UNPARTITIONED),
    ]
    ref = store.write_tables(
        EVAL_RESULTS.path[-1],
        str(i),
        {"samples": samples, "results": row},
        inputs=inputs,
        params=_eval_params(recipe),
    )
    return _result(ref, row, adh, samples)
