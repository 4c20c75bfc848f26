"""`prompts` (one disjoint shard per iteration) and `eval_prompts` (the fixed held-out split)."""

from pathlib import Path

import dagster as dg

from assets.partitions import ITERATIONS, iteration_of
from prefscale.artifacts import DISJOINT_FROM_HELDOUT
from prefscale.data.prompts import build_pool, split_pool
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, file_sha256
from resources import RecipeResource, StorageResource

PROMPTS = dg.AssetKey("prompts")
EVAL_PROMPTS = dg.AssetKey("eval_prompts")


def _params(r) -> dict[str, object]:
    """How the pool was made: the data settings, the seed, and the prompts file's hash when there is one."""
    params: dict[str, object] = {
        "data": r.data.model_dump(mode="json"),
        "seed": r.seed,
        "iterations": r.iterations,
    }
    if r.data.source == "file":
        params["file_sha256"] = file_sha256(Path(r.data.path))
    if r.labeling.task_types:
        params["task_types"] = [t.model_dump() for t in r.labeling.task_types]
    return params


def _summary(df) -> dict[str, object]:
    counts = df.group_by("task_type").len().sort("task_type")
    return {
        "dagster/row_count": df.height,
        "task_types": dg.MetadataValue.md(markdown_table(counts)),
        "sample": dg.MetadataValue.md(markdown_table(df.head(5))),
    }


@dg.asset(
    key=PROMPTS,
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    description="This iteration's prompt shard: de-duplicated, disjoint from other shards and the held-out split.",
    check_specs=[dg.AssetCheckSpec(DISJOINT_FROM_HELDOUT, asset=PROMPTS, blocking=True)],
)
def prompts(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    r = recipe.load()
    i = iteration_of(context, r.iterations)
    splits = split_pool(build_pool(r.data, r.seed, r.labeling.task_types), r.data, r.iterations, r.seed)
    shard = splits[str(i)]
    overlap = shard.join(splits["heldout"], on="prompt_id", how="inner").height
    ref = storage.store.write_frame(PROMPTS.path[-1], str(i), shard, params=_params(r))
    return dg.MaterializeResult(
        metadata={**_summary(shard), "path": dg.MetadataValue.path(str(ref.path)), "version": ref.version},
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name=DISJOINT_FROM_HELDOUT, passed=overlap == 0, metadata={"overlap": overlap}
            )
        ],
    )


@dg.asset(
    key=EVAL_PROMPTS,
    group_name="data",
    kinds={"polars", "parquet"},
    code_version="1",
    description="The fixed held-out evaluation prompts, never used for training.",
)
def eval_prompts(storage: StorageResource, recipe: RecipeResource) -> dg.MaterializeResult:
    r = recipe.load()
    heldout = split_pool(build_pool(r.data, r.seed, r.labeling.task_types), r.data, r.iterations, r.seed)[
        "heldout"
    ]
    ref = storage.store.write_frame(EVAL_PROMPTS.path[-1], UNPARTITIONED, heldout, params=_params(r))
    return dg.MaterializeResult(
        metadata={**_summary(heldout), "path": dg.MetadataValue.path(str(ref.path)), "version": ref.version},
        data_version=dg.DataVersion(ref.version),
    )
