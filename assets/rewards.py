"""`reward_scores`: a reward per candidate (this recipe: the label model's P(high quality))."""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.labels import QUALITY_LABELS
from assets.partitions import ITERATIONS, iteration_of
from prefscale.rewards import label_model_rewards, reward_summary
from resources import RecipeResource, StorageResource

REWARD_SCORES = dg.AssetKey("reward_scores")


@dg.asset(
    key=REWARD_SCORES,
    group_name="rewards",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES, QUALITY_LABELS],
    description="Reward per candidate and its rank within the prompt (1 = best).",
    check_specs=[dg.AssetCheckSpec("rewards_finite", asset=REWARD_SCORES, blocking=True)],
)
def reward_scores(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref, labels_ref = (
        store.current(CANDIDATES.path[-1], str(i)),
        store.current(QUALITY_LABELS.path[-1], str(i)),
    )
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    labels = store.read_frame(QUALITY_LABELS.path[-1], str(i))
    rewards = label_model_rewards(cands, labels)
    n_bad = int(rewards.filter(~pl.col("reward").is_finite()).height)
    params = {"source": r.reward.source}
    ref = store.write_frame(
        REWARD_SCORES.path[-1], str(i), rewards, inputs=[cands_ref, labels_ref], params=params
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rewards.height,
            "source": r.reward.source,
            **{f"reward_{k}": round(v, 4) for k, v in reward_summary(rewards).items()},
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name="rewards_finite", passed=n_bad == 0, metadata={"non_finite": n_bad}
            )
        ],
    )
