"""`reward_scores`: a reward per candidate from the recipe's reward sources (one, or a weighted ensemble).

The sources are `label_model` (P(high), the embedded default), `reward_model` (the weak-supervision reward model,
asset `reward_model`) and `pairrm` (llm-blender's PairRM; the embedded recipe's default ranker is a random tiny
one, a code-path check). The frame keeps each source's score, the final reward, the rank within the prompt and,
with PairRM, each candidate's row of the prompt's N×N comparison matrix (`prefscale.rewards`).

Dagster lineage: `reward_scores` is drawn downstream of `reward_model` when the recipe named by
`PREFSCALE_RECIPE` (the one the graph is built for, like the iteration partitions) lists that source; the
artifact's manifest records the reward model version it used in every case.
"""

import os

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.labels import QUALITY_LABELS
from assets.partitions import ITERATIONS, iteration_of
from assets.reward_model import REWARD_MODEL
from prefscale.artifacts import REWARDS_FINITE
from prefscale.config.recipe import load_recipe
from prefscale.report import histogram_markdown, markdown_table
from resources import ComputeResource, RecipeResource, StorageResource

REWARD_SCORES = dg.AssetKey("reward_scores")


def _deps() -> list[dg.AssetKey]:
    recipe = load_recipe(os.environ.get("PREFSCALE_RECIPE", "embedded"))
    extra = [REWARD_MODEL] if "reward_model" in recipe.reward.names else []
    return [CANDIDATES, QUALITY_LABELS, *extra]


def _matrix_md(rewards: pl.DataFrame) -> str:
    """The first prompt's PairRM matrix M (row beats column when > 0) as a markdown table."""
    first = rewards.sort("prompt_id", "matrix_index").filter(pl.col("prompt_id") == pl.col("prompt_id").min())
    ids = first["candidate_id"].to_list()
    table = pl.DataFrame(
        {
            "candidate": ids,
            **{c: [round(row[k], 3) for row in first["pairrm_logits"]] for k, c in enumerate(ids)},
        }
    )
    return f"prompt `{first['prompt_id'][0]}`, M[i, j] (row i shown first vs column j)\n\n" + markdown_table(
        table
    )


@dg.asset(
    key=REWARD_SCORES,
    group_name="rewards",
    kinds={"polars", "parquet"},
    code_version="2",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=_deps(),
    description="Reward per candidate from the recipe's sources (label model, reward model, PairRM; a weighted "
    "ensemble of several), each source's score, and the rank within the prompt (1 = best).",
    check_specs=[dg.AssetCheckSpec(REWARDS_FINITE, asset=REWARD_SCORES, blocking=True)],
)
def reward_scores(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.rewards.base import score_column
    from prefscale.rewards.ensemble import combine_rewards
    from prefscale.rewards.sources import pairrm_model_ref, source_scores
    from prefscale.rewards.summary import (
        describe_sources,
        distribution_png,
        png_markdown,
        reward_summary,
        source_correlations,
    )

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref, labels_ref = (
        store.current(CANDIDATES.path[-1], str(i)),
        store.current(QUALITY_LABELS.path[-1], str(i)),
    )
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    labels = store.read_frame(QUALITY_LABELS.path[-1], str(i))
    inputs = [cands_ref, labels_ref]
    sources = r.reward.sources
    meta: dict[str, object] = {}
    dev = compute.resolve(r.policy.dtype) if any(s.source != "label_model" for s in sources) else None
    rm_dir = None
    if "reward_model" in r.reward.names:
        from prefscale.rewards.reward_model import ensure_reward_model

        rm_ref, trained = ensure_reward_model(store, r.reward.reward_model, r.seed, dev)
        inputs.append(rm_ref)
        rm_dir = rm_ref.path
        meta["reward_model"] = f"{rm_ref.asset}[{rm_ref.partition}]@{rm_ref.version}"
        meta["reward_model_trained_now"] = trained is not None
        context.log.info(f"reward model {'trained' if trained else 'reused'}: {rm_ref.path}")
    scores, matrix = source_scores(
        cands,
        labels,
        sources,
        policy_source=r.policy.source,
        seed=r.seed,
        device=dev.device if dev else "cpu",
        reward_model_dir=rm_dir,
        compute=dev,
    )
    weights = {s.source: s.weight for s in sources}
    rewards = combine_rewards(cands, scores, weights, r.reward.ensemble)
    if matrix is not None:
        rewards = rewards.join(matrix, on="candidate_id", how="left")
    resolved = [
        {**s.model_dump(mode="json"), "model": pairrm_model_ref(s.model, r.policy.source)}
        if s.source == "pairrm"
        else s.model_dump(mode="json", exclude={"model"})
        for s in sources
    ]
    described = describe_sources(
        [s.model_copy(update={"model": x.get("model")}) for s, x in zip(sources, resolved, strict=True)],
        r.reward.ensemble,
    )
    params: dict[str, object] = {"source": described, "sources": resolved}
    if len(sources) > 1:
        params["ensemble"] = r.reward.ensemble
    if any(x.get("model") == "tiny" for x in resolved):
        params["tiny_pairrm_seed"] = r.seed
    ref = store.write_frame(REWARD_SCORES.path[-1], str(i), rewards, inputs=inputs, params=params)

    score_cols = [score_column(s.source) for s in sources]
    n_bad = int(rewards.filter(~pl.col("reward").is_finite()).height)
    per_source = pl.DataFrame(
        [
            (
                s.source,
                s.weight,
                *[round(float(v or 0.0), 4) for v in (c.mean(), c.std(), c.min(), c.max())],
                int((~c.is_finite()).sum()),
            )
            for s, c in ((s, rewards[score_column(s.source)]) for s in sources)
        ],
        schema=["source", "weight", "mean", "std", "min", "max", "non_finite"],
        orient="row",
    )
    view = (
        cands.select("candidate_id", "response")
        .join(rewards.select("candidate_id", "prompt_id", *score_cols, "reward", "rank"), on="candidate_id")
        .filter(pl.col("prompt_id") == pl.col("prompt_id").min())
        .sort("rank")
        .with_columns(pl.col("response").str.slice(0, 80))
        .drop("prompt_id")
    )
    preview = histogram_markdown(rewards["reward"].to_list(), "final reward distribution")
    meta = {**({"distribution_preview": dg.MetadataValue.md(preview)} if preview else {}), **meta}
    meta.update(
        {
            "dagster/row_count": rewards.height,
            "source": described,
            **{f"reward_{k}": round(v, 4) for k, v in reward_summary(rewards).items()},
            "sources": dg.MetadataValue.md(markdown_table(per_source)),
            "distribution": dg.MetadataValue.md(png_markdown(distribution_png(rewards, score_cols))),
            "sample_prompt": dg.MetadataValue.md(markdown_table(view)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        }
    )
    if len(sources) > 1:
        meta["ensemble"] = r.reward.ensemble
        meta["spearman_between_sources"] = dg.MetadataValue.md(
            markdown_table(source_correlations(rewards).with_columns(pl.col("spearman").round(3)))
        )
    if matrix is not None:
        meta["pairrm_matrix"] = dg.MetadataValue.md(_matrix_md(rewards))
    return dg.MaterializeResult(
        metadata=meta,
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(check_name=REWARDS_FINITE, passed=n_bad == 0, metadata={"non_finite": n_bad})
        ],
    )
