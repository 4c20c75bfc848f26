"""`lf_votes` (the SME labeling functions' label matrix) and `quality_labels` (the Snorkel label model)."""

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS, iteration_of
from prefscale.labeling import apply_lfs, lf_catalog, lf_summary
from prefscale.report import markdown_table
from resources import RecipeResource, StorageResource

LF_VOTES = dg.AssetKey("lf_votes")
QUALITY_LABELS = dg.AssetKey("quality_labels")


@dg.asset(
    key=LF_VOTES,
    group_name="labeling",
    kinds={"polars", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[CANDIDATES],
    description="Label matrix: each SME labeling function's vote (high=1 / low=0 / abstain=-1) per candidate, "
    "with the functions' versions alongside.",
)
def lf_votes(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref = store.current(CANDIDATES.path[-1], str(i))
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    lfs = r.labeling.functions
    votes = apply_lfs(cands, lfs)
    catalog = lf_catalog(lfs)
    summary = lf_summary(votes, [lf.name for lf in lfs]).join(
        catalog.select("lf_name", "kind", "version"), on="lf_name"
    )
    params = {"functions": catalog.select("lf_name", "kind", "version").to_dicts()}
    ref = store.write_tables(
        LF_VOTES.path[-1], str(i), {"data": votes, "functions": catalog}, inputs=[cands_ref], params=params
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": votes.height,
            "labeling_functions": len(lfs),
            "lf_summary": dg.MetadataValue.md(markdown_table(summary)),
            "abstain_only_rows": int(
                (votes.select([lf.name for lf in lfs]).to_numpy() == -1).all(axis=1).sum()
            ),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
    )


@dg.asset(
    key=QUALITY_LABELS,
    group_name="labeling",
    kinds={"snorkel", "parquet"},
    code_version="1",
    partitions_def=ITERATIONS,
    deps=[LF_VOTES],
    description="Snorkel LabelModel fitted on the label matrix: P(high quality) per candidate, with the votes "
    "behind each label and majority vote as the baseline.",
)
def quality_labels(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    from prefscale.label_model import fit_label_model

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    votes_ref = store.current(LF_VOTES.path[-1], str(i))
    votes = store.read_frame(LF_VOTES.path[-1], str(i))
    names = [lf.name for lf in r.labeling.functions]
    lm = r.labeling.label_model
    res = fit_label_model(
        votes, names, n_epochs=lm.n_epochs, lr=lm.lr, l2=lm.l2, prec_init=lm.prec_init, seed=r.seed
    )
    params = {
        "label_model": "snorkel.LabelModel",
        **lm.model_dump(mode="json"),
        "seed": r.seed,
        "lf_accuracies": res.weights,
    }
    ref = store.write_frame(QUALITY_LABELS.path[-1], str(i), res.labels, inputs=[votes_ref], params=params)
    weights = pl.DataFrame({"lf_name": list(res.weights), "estimated_accuracy": list(res.weights.values())})
    agree = res.labels.filter(pl.col("majority_vote") >= 0)
    agreement = (
        float((agree["label"] == agree["majority_vote"]).mean() or 0.0) if agree.height else float("nan")
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": res.labels.height,
            "share_high": round(res.class_balance[1], 4),
            "mean_p_high": round(float(res.labels["p_high"].mean() or 0.0), 4),
            "agreement_with_majority_vote": round(agreement, 4),
            "lf_accuracies": dg.MetadataValue.md(markdown_table(weights)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
        },
        data_version=dg.DataVersion(ref.version),
    )
