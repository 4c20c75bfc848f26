"""`curated_sft`: the reward-curated SFT subset of an iteration's candidates, in the chat `messages` format.

The RedPajama-Chat-Curated recipe: score a pool of (prompt, response) rows with a reward and keep the top share
for supervised fine-tuning. Here the pool is the iteration's candidates and the reward is `reward_scores`, so the
subset follows whatever reward sources the recipe sets; `sft.top_quantile` and `sft.scope` choose what is kept
(`prefscale.rewards.curate_sft`).
"""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS, iteration_of
from assets.rewards import REWARD_SCORES
from prefscale.artifacts import MESSAGES_WELL_FORMED
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from resources import RecipeResource, StorageResource

CURATED_SFT = dg.AssetKey("curated_sft")


@dg.asset(
    key=CURATED_SFT,
    group_name="rewards",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES, REWARD_SCORES],
    description="Reward-curated SFT data: the top `sft.top_quantile` of the iteration's finished, distinct "
    "candidates by reward, as chat `messages` ([user, assistant]) with their reward.",
    check_specs=[dg.AssetCheckSpec(MESSAGES_WELL_FORMED, asset=CURATED_SFT, blocking=True)],
)
def curated_sft(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    from prefscale.rewards.curation import curate_sft

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref, rewards_ref = (
        store.current(CANDIDATES.path[-1], str(i)),
        store.current(REWARD_SCORES.path[-1], str(i)),
    )
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    rewards = store.read_frame(REWARD_SCORES.path[-1], str(i))
    sft = r.sft
    system = r.policy.system_prompt
    kept = curate_sft(
        cands,
        rewards,
        top_quantile=sft.top_quantile,
        scope=sft.scope,
        drop_unfinished=sft.drop_unfinished,
        system=system,
    )
    if kept.height == 0:
        raise dg.Failure(f"iteration {i}: no candidate is eligible for the curated SFT subset")
    ref = store.write_frame(
        CURATED_SFT.path[-1],
        str(i),
        kept,
        inputs=[cands_ref, rewards_ref],
        params={
            "sft": sft.model_dump(mode="json"),
            "reward_source": rewards["source"][0],
            **system_params(system),
        },
    )
    roles_ok = (
        kept["messages"].list.eval(pl.element().struct.field("role")).list.join(",")
        == ("system," if system else "") + "user,assistant"
    )
    bad = int((~roles_ok).sum())
    all_len = cands["response"].str.len_chars()
    kept_len = kept["messages"].list.last().struct.field("content").str.len_chars()
    view = kept.head(5).select(
        "candidate_id",
        pl.col("messages").list.last().struct.field("content").str.slice(0, 120).alias("response"),
        pl.col("reward").round(4),
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": kept.height,
            "candidates": cands.height,
            "kept_share": round(kept.height / max(1, cands.height), 4),
            "prompts_covered": kept["prompt_id"].n_unique(),
            "top_quantile": sft.top_quantile,
            "scope": sft.scope,
            "min_kept_reward": round(float(kept["reward"].min() or 0.0), 4),
            "mean_kept_reward": round(float(kept["reward"].mean() or 0.0), 4),
            "mean_reward_all": round(float(rewards["reward"].mean() or 0.0), 4),
            "mean_chars_kept": round(float(kept_len.mean() or 0.0), 1),
            "mean_chars_all": round(float(all_len.mean() or 0.0), 1),
            "sample": dg.MetadataValue.md(markdown_table(view)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(check_name=MESSAGES_WELL_FORMED, passed=bad == 0, metadata={"bad": bad})
        ],
    )
