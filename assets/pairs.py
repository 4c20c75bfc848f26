"""`preference_pairs`: best vs worst candidate per prompt, in TRL's prompt/chosen/rejected format."""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS, iteration_of
from assets.rewards import REWARD_SCORES
from prefscale.pairs import select_pairs
from prefscale.report import markdown_table
from resources import RecipeResource, StorageResource

PREFERENCE_PAIRS = dg.AssetKey("preference_pairs")


@dg.asset(
    key=PREFERENCE_PAIRS,
    group_name="rewards",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES, REWARD_SCORES],
    description="Hard-negative pairs: the best- and worst-rewarded candidate per prompt; prompts with identical "
    "or tied candidates are dropped (reasons in metadata).",
    check_specs=[dg.AssetCheckSpec("chosen_differs_from_rejected", asset=PREFERENCE_PAIRS, blocking=True)],
)
def preference_pairs(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref, rewards_ref = (
        store.current(CANDIDATES.path[-1], str(i)),
        store.current(REWARD_SCORES.path[-1], str(i)),
    )
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    rewards = store.read_frame(REWARD_SCORES.path[-1], str(i))
    sel = select_pairs(
        cands,
        rewards,
        strategy=r.pairs.strategy,
        min_margin=r.pairs.min_margin,
        unfinished_is_worst=r.pairs.unfinished_is_worst,
        length_penalty=r.pairs.length_penalty,
        seed=r.seed + i,
    )
    if sel.pairs.height == 0:
        raise dg.Failure(
            f"iteration {i}: no preference pairs survived selection ({sel.dropped.height} prompts dropped)"
        )
    ref = store.write_tables(
        PREFERENCE_PAIRS.path[-1],
        str(i),
        {"data": sel.pairs, "dropped": sel.dropped},
        inputs=[cands_ref, rewards_ref],
        params={**r.pairs.model_dump(mode="json"), "seed": r.seed + i},
    )
    p = sel.pairs
    same = int((p["chosen_id"] == p["rejected_id"]).sum())
    reasons = sel.dropped.group_by("reason").len().sort("reason") if sel.dropped.height else sel.dropped
    view = p.select(
        "prompt_id",
        pl.col("chosen").list.first().struct.field("content").alias("chosen"),
        pl.col("rejected").list.first().struct.field("content").alias("rejected"),
        "margin",
    ).head(5)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": p.height,
            "dropped_prompts": sel.dropped.height,
            "dropped_reasons": dg.MetadataValue.md(markdown_table(reasons)) if reasons.height else "none",
            "mean_margin": round(float(p["margin"].mean() or 0.0), 4),
            "mean_length_diff_chars": round(float(p["length_diff"].mean() or 0.0), 1),
            "rejected_unfinished": int(p["rejected_unfinished"].sum()),
            "sample": dg.MetadataValue.md(markdown_table(view)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
            "sha256": ref.digest,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name="chosen_differs_from_rejected", passed=same == 0, metadata={"same": same}
            )
        ],
    )
