"""`candidates`: N sampled responses per prompt from the policy the iteration starts from, by the recipe's backend."""

import json
import time

import dagster as dg

from assets.partitions import ITERATIONS, iteration_of
from assets.policy import BASE_POLICY
from assets.prompts import PROMPTS
from prefscale.artifacts import NO_EMPTY_RESPONSES
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from prefscale.storage import policy_for_iteration
from resources import ComputeResource, RecipeResource, StorageResource

CANDIDATES = dg.AssetKey("candidates")
MAX_EMPTY_SHARE = 0.5  # no_empty_responses blocks when more than this share of the samples is empty


def sampling_params(g, system: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {
        "n": g.num_candidates,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "max_new_tokens": g.max_new_tokens,
    }
    if g.stop:
        out["stop"] = list(g.stop)
    return {**out, **system_params(system)}


def backend_params(g) -> dict[str, object]:
    """The backend and its settings for the manifest (an endpoint's URL and model; never its key)."""
    if g.backend == "endpoint":
        e = g.endpoint
        return {"backend": "endpoint", "base_url": e.base_url, "model": e.model}
    return {"backend": g.backend}


@dg.asset(
    key=CANDIDATES,
    group_name="alignment",
    kinds={"pytorch", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[PROMPTS, BASE_POLICY],
    description="N responses per prompt sampled from the base policy for iteration 1, else from the previous "
    "iteration's dpo_checkpoint, by the recipe's generation backend (transformers, vllm or an endpoint); "
    "tokens, finish reason and latency per response.",
    check_specs=[dg.AssetCheckSpec(NO_EMPTY_RESPONSES, asset=CANDIDATES, blocking=True)],
)
def candidates(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.generation.base import generation_stats
    from prefscale.generation.registry import make_backend
    from prefscale.policy.io import check_policy_system_prompt

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    prompts_ref = store.current(PROMPTS.path[-1], str(i))
    prompts = store.read_frame(PROMPTS.path[-1], str(i))
    policy = policy_for_iteration(store, i)
    g = r.generation
    system = r.policy.system_prompt
    check_policy_system_prompt(policy.path, system, r.dpo.max_length)  # before any sampling
    dev = compute.resolve(r.policy.dtype) if g.backend != "endpoint" else None
    backend = make_backend(g, policy.path, dev, policy_iteration=i - 1, system=system)
    seed = r.seed * 100 + i
    t0 = time.perf_counter()
    cands, info = backend.generate(prompts, g.num_candidates, seed=seed)
    seconds = time.perf_counter() - t0
    stats = generation_stats(cands, seconds)
    params = {
        "sampling": sampling_params(g, system),
        "seed": seed,
        "policy": policy.path.name,
        **({} if g.backend == "transformers" else backend_params(g)),
    }
    # Published only after every sample came back: a failed backend leaves no partial artifact. Latencies are
    # measurements, not content: kept beside the version, so equal samples keep one version.
    ref = store.write_frame(
        CANDIDATES.path[-1], str(i), cands.drop("latency_s"), inputs=[prompts_ref, policy], params=params
    )
    store.write_measurements(ref, cands.select("candidate_id", "latency_s"))
    n_empty = int((cands["response"].str.strip_chars() == "").sum())
    sampling = sampling_params(g, system)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": cands.height,
            "prompts": prompts.height,
            "policy": f"{policy.asset}[{policy.partition}]@{policy.version}",
            "policy_path": dg.MetadataValue.path(str(policy.path)),
            "sampling": dg.MetadataValue.json(sampling),
            "backend": info.backend,
            "generation_seconds": round(seconds, 3),
            **(
                {"batch_size_used": info.batch_size, "oom_backoffs": info.oom_backoffs}
                if info.batch_size
                else {}
            ),
            **({"requests": info.requests, "retries": info.retries} if info.requests else {}),
            **{k: round(v, 4) for k, v in stats.items()},
            "sample": dg.MetadataValue.md(
                markdown_table(
                    cands.head(10).select("prompt_id", "sample_idx", "response", "n_tokens", "finish_reason")
                )
            ),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name=NO_EMPTY_RESPONSES,
                passed=n_empty == 0,
                # A weak policy sometimes ends at once (an empty sample ranks last: data, a warning). Most samples
                # empty means a broken model or backend: that blocks the run before labeling.
                severity=(
                    dg.AssetCheckSeverity.ERROR
                    if n_empty > MAX_EMPTY_SHARE * cands.height
                    else dg.AssetCheckSeverity.WARN
                ),
                metadata={
                    "empty": n_empty,
                    "empty_share": round(n_empty / max(cands.height, 1), 4),
                    "blocks_above_share": MAX_EMPTY_SHARE,
                    "sampling": json.dumps(sampling),
                },
            )
        ],
    )
