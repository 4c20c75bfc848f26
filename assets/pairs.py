"""`preference_pairs`: best vs worst candidate per prompt, in TRL's prompt/chosen/rejected format."""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS, iteration_of
from assets.rewards import REWARD_SCORES
from prefscale.artifacts import CHOSEN_DIFFERS_FROM_REJECTED, MARGINS_POSITIVE, PAIRS_REFERENCE_CANDIDATES
from prefscale.pairs.checks import non_positive_margins, unknown_candidate_refs
from prefscale.pairs.length import describe_length_control
from prefscale.pairs.selection import DROP_REASONS, base_length_anchor, select_pairs
from prefscale.policy.chat import system_params
from prefscale.report import markdown_table
from resources import RecipeResource, StorageResource

PREFERENCE_PAIRS = dg.AssetKey("preference_pairs")


def _quantiles(col: pl.Series) -> list[float]:
    """mean, min, p10, median, p90, max of a column (zeros when it is empty)."""
    if col.len() == 0:
        return [0.0] * 6
    c = col.cast(pl.Float64)
    return [c.mean(), c.min(), c.quantile(0.1, "linear"), c.median(), c.quantile(0.9, "linear"), c.max()]


@dg.asset(
    key=PREFERENCE_PAIRS,
    group_name="rewards",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES, REWARD_SCORES],
    description="Hard-negative pairs: the best- and worst-rewarded candidate per prompt; prompts with identical "
    "or tied candidates are dropped (reasons in metadata).",
    check_specs=[
        dg.AssetCheckSpec(
            CHOSEN_DIFFERS_FROM_REJECTED,
            asset=PREFERENCE_PAIRS,
            blocking=True,
            description="No pair uses the same candidate as chosen and rejected.",
        ),
        dg.AssetCheckSpec(
            MARGINS_POSITIVE,
            asset=PREFERENCE_PAIRS,
            blocking=True,
            description="Every pair's chosen candidate ranks above its rejected one: margin > 0 on the "
            "selection key (the reward, with unfinished_is_worst's penalty, length_penalized's λ·length and "
            "length_control's learned slope·log-length), not NaN. The raw reward margin can be negative when "
            "the rejected response was cut off or longer.",
        ),
        dg.AssetCheckSpec(
            PAIRS_REFERENCE_CANDIDATES,
            asset=PREFERENCE_PAIRS,
            blocking=True,
            description="Every chosen_id / rejected_id is a candidate of the same iteration and prompt, with "
            "the same response text.",
        ),
    ],
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
    anchor, base_refs = None, []
    if r.pairs.length_control == "anchored" and i > 1:  # the base's candidates: iteration 1's
        base_refs = [store.current(a.path[-1], "1") for a in (CANDIDATES, REWARD_SCORES)]
        base = [store.read_frame(a.path[-1], "1") for a in (CANDIDATES, REWARD_SCORES)]
        anchor = base_length_anchor(*base, unfinished_is_worst=r.pairs.unfinished_is_worst)
    opts = {**r.pairs.selection_options(), "length_anchor": anchor, "seed": r.seed + i}
    sel = select_pairs(cands, rewards, **opts, system=r.policy.system_prompt)
    note = describe_length_control(r.pairs.length_control, sel.length_slope, sel.length_anchor)
    anchor_log_chars = sel.length_anchor.log_chars if sel.length_anchor else None
    if sel.pairs.height == 0:
        raise dg.Failure(
            f"iteration {i}: no preference pairs survived selection ({sel.dropped.height} prompts dropped)"
        )
    ref = store.write_tables(
        PREFERENCE_PAIRS.path[-1],
        str(i),
        {"data": sel.pairs, "dropped": sel.dropped},
        inputs=[cands_ref, rewards_ref, *base_refs],
        params={
            **r.pairs.model_dump(mode="json"),
            "seed": r.seed + i,
            "length_slope_removed": sel.length_slope,
            "length_anchor_log_chars": anchor_log_chars,
            "length_control_note": note,
            **system_params(r.policy.system_prompt),
        },
    )
    p = sel.pairs
    same = int((p["chosen_id"] == p["rejected_id"]).sum())
    reasons = (
        sel.dropped.group_by("reason")
        .agg(pl.len().alias("prompts"), pl.col("prompt_id").sort().head(3).str.join(", ").alias("e.g."))
        .sort("reason")
        .with_columns(pl.col("reason").replace_strict(DROP_REASONS, default="").alias("meaning"))
        if sel.dropped.height
        else sel.dropped
    )
    view = p.select(
        "prompt_id",
        pl.col("chosen").list.first().struct.field("content").alias("chosen"),
        pl.col("rejected").list.first().struct.field("content").alias("rejected"),
        "margin",
    ).head(5)
    n_prompts = cands["prompt_id"].n_unique()
    stats = pl.DataFrame(
        [
            (name, *[round(float(v), 4) for v in _quantiles(p[col])])
            for name, col in (
                ("margin (reward)", "margin"),
                ("length diff chosen−rejected (chars)", "length_diff"),
            )
        ],
        schema=["statistic", "mean", "min", "p10", "median", "p90", "max"],
        orient="row",
    )
    sources = rewards["source"].unique().sort().to_list()
    bad_margins = non_positive_margins(
        p,
        cands,
        unfinished_is_worst=r.pairs.unfinished_is_worst,
        length_penalty=r.pairs.length_penalty,
        length_slope=sel.length_slope,
        length_anchor=anchor_log_chars,
    )
    bad_refs = unknown_candidate_refs(p, cands)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": p.height,
            "strategy": r.pairs.strategy,
            "length_control": note,
            "length_slope_removed": round(sel.length_slope, 6),
            "reward_source": ", ".join(sources),
            "prompts": n_prompts,
            "pair_rate": round(p.height / max(1, n_prompts), 4),
            "dropped_prompts": sel.dropped.height,
            "dropped_reasons": dg.MetadataValue.md(markdown_table(reasons)) if reasons.height else "none",
            "mean_margin": round(float(p["margin"].mean() or 0.0), 4),
            "median_margin": round(float(p["margin"].median() or 0.0), 4),
            "mean_length_diff_chars": round(float(p["length_diff"].mean() or 0.0), 1),
            "chosen_longer_share": round(float((p["length_diff"] > 0).mean() or 0.0), 4),
            "mean_chosen_chars": round(
                float(p["chosen"].list.first().struct.field("content").str.len_chars().mean() or 0.0), 1
            ),
            "mean_rejected_chars": round(
                float(p["rejected"].list.first().struct.field("content").str.len_chars().mean() or 0.0), 1
            ),
            "margin_and_length": dg.MetadataValue.md(markdown_table(stats)),
            "rejected_unfinished": int(p["rejected_unfinished"].sum()),
            "sample": dg.MetadataValue.md(markdown_table(view)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
            "sha256": ref.digest,
        },
        data_version=dg.DataVersion(ref.version),
        check_results=[
            dg.AssetCheckResult(
                check_name=CHOSEN_DIFFERS_FROM_REJECTED, passed=same == 0, metadata={"same": same}
            ),
            dg.AssetCheckResult(
                check_name=MARGINS_POSITIVE,
                passed=bad_margins.height == 0,
                metadata={
                    "non_positive": bad_margins.height,
                    "raw_margin_non_positive": int((~(p["margin"] > 0)).sum()),
                    "min_margin": float(p["margin"].min()) if p.height else 0.0,
                    **(
                        {"examples": dg.MetadataValue.md(markdown_table(bad_margins.head(5)))}
                        if bad_margins.height
                        else {}
                    ),
                },
            ),
            dg.AssetCheckResult(
                check_name=PAIRS_REFERENCE_CANDIDATES,
                passed=bad_refs.height == 0,
                metadata={
                    "bad_references": bad_refs.height,
                    "candidates_version": cands_ref.version,
                    **(
                        {"examples": dg.MetadataValue.md(markdown_table(bad_refs.head(5)))}
                        if bad_refs.height
                        else {}
                    ),
                },
            ),
        ],
    )
