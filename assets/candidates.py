"""`candidates`: N sampled responses per prompt from the policy the iteration starts from."""

import json
import time

import dagster as dg

from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from assets.prompts import PROMPTS
from prefscale.report import markdown_table
from prefscale.storage import policy_for_iteration
from resources import ComputeResource, RecipeResource, StorageResource

CANDIDATES = dg.AssetKey("candidates")


def sampling_params(g) -> dict[str, object]:
    return {
        "n": g.num_candidates,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "max_new_tokens": g.max_new_tokens,
    }


@dg.asset(
    key=CANDIDATES,
    group_name="alignment",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[PROMPTS, BASE_POLICY],
    description="N responses per prompt sampled (batched) from the base policy for iteration 1, else from the "
    "previous iteration's dpo_checkpoint.",
    check_specs=[dg.AssetCheckSpec("no_empty_responses", asset=CANDIDATES)],
)
def candidates(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.generation import generation_stats, sample_responses
    from prefscale.policy import load_policy

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    prompts_ref = store.current(PROMPTS.path[-1], str(i))
    prompts = store.read_frame(PROMPTS.path[-1], str(i))
    policy = policy_for_iteration(store, i)
    model, tok = load_policy(policy.path, compute.resolve())
    g = r.generation
    t0 = time.perf_counter()
    cands = sample_responses(
        model,
        tok,
        prompts,
        g.num_candidates,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        batch_size=g.batch_size,
        seed=r.seed * 100 + i,
    )
    stats = generation_stats(cands, time.perf_counter() - t0)
    params = {"sampling": sampling_params(g), "seed": r.seed * 100 + i, "policy": policy.path.name}
    ref = store.write_frame(CANDIDATES.path[-1], str(i), cands, inputs=[prompts_ref, policy], params=params)
    n_empty = int((cands["response"].str.strip_chars() == "").sum())
    sampling = sampling_params(g)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": cands.height,
            "prompts": prompts.height,
            "policy": f"{policy.asset}[{policy.partition}]@{policy.version}",
            "policy_path": dg.MetadataValue.path(str(policy.path)),
            "sampling": dg.MetadataValue.json(sampling),
            **{k: round(v, 4) for k, v in stats.items()},
            "sample": dg.MetadataValue.md(
                markdown_table(cands.head(10).select("prompt_id", "sample_idx", "response", "finish_reason"))
            ),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name="no_empty_responses",
                passed=n_empty == 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"empty": n_empty, "sampling": json.dumps(sampling)},
            )
        ],
    )
