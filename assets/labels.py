"""`lf_votes` (the SME labeling functions' label matrix) and `quality_labels` (the Snorkel label model).

Both read the SMEs' gold (`sme_annotations`) when it exists, recorded in each version's manifest (`inputs`)
rather than as a graph edge, so a new gold set re-runs only `quality_labels` (`sensors.annotations`).
"""

import dagster as dg
import numpy as np
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS, iteration_of
from prefscale.labeling.analysis import catalog_entries, lf_analysis, lf_catalog
from prefscale.labeling.gold import iteration_gold
from prefscale.labeling.length import label_length_correlation, read_votes_with_lengths, response_lengths
from prefscale.labeling.votes import LabelingFunctionError
from prefscale.report import markdown_table
from resources import ComputeResource, RecipeResource, StorageResource

LF_VOTES = dg.AssetKey("lf_votes")
QUALITY_LABELS = dg.AssetKey("quality_labels")


def _fmt(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col(pl.Float64).round(3))


@dg.asset(
    key=LF_VOTES,
    group_name="labeling",
    kinds={"polars", "pytorch", "parquet"},
    code_version="2",
    partitions_def=ITERATIONS,
    pool="gpu",
    deps=[CANDIDATES],
    description="Label matrix: each SME labeling function's vote (high=1 / low=0 / abstain=-1) per candidate "
    "(text patterns vectorised, python functions row-wise, model-backed functions batched on the base policy), "
    "with the functions' versions, the model-backed functions' raw scores and the response lengths alongside.",
)
def lf_votes(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    recipe: RecipeResource,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    from prefscale.labeling.apply import apply_all_lfs_with_scores
    from prefscale.labeling.context import LFContext
    from prefscale.labeling.task_classifier import classify_tasks

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    cands_ref = store.current(CANDIDATES.path[-1], str(i))
    cands = store.read_frame(CANDIDATES.path[-1], str(i))
    lfs = list(r.labeling.all_functions)
    clf = r.labeling.task_classifier
    rows = classify_tasks(cands, clf, seed=r.seed) if clf else cands
    # `model: policy` (self_judge) is the policy that sampled the candidates: iteration i's start
    lf_context = LFContext(store=store, compute=compute.resolve(r.policy.dtype), iteration=i)
    rows = lf_context.with_references(rows)  # the prompt shard's reference answers, when it has them
    try:
        app = apply_all_lfs_with_scores(rows, lfs, lf_context)
    except LabelingFunctionError as e:  # the function's name and first offending row; nothing is written
        raise dg.Failure(
            description=str(e),
            metadata={
                "labeling_function": e.lf_name,
                "row": -1 if e.row is None else e.row,
                "candidate_id": str(e.candidate_id),
            },
        ) from e
    votes = app.votes
    catalog = lf_catalog([*lfs, *([clf] if clf else [])])
    gold, gold_ref, stale = iteration_gold(store, i)
    tables = {"data": votes, "functions": catalog, "lengths": response_lengths(cands)}
    analysis = lf_analysis(votes, lfs, gold, lengths=tables["lengths"])
    if model_names := [c for c in app.scores.columns if c != "candidate_id"]:
        tables["scores"] = app.scores
    if clf:
        tables["task_types"] = rows.select("candidate_id", "task_type", "task_type_source")
    inputs = [cands_ref, *lf_context.inputs(), *([gold_ref] if gold is not None and gold_ref else [])]
    params = {
        "functions": catalog.select("lf_name", "kind", "version").to_dicts(),
        "models": {k: f"{v.asset}[{v.partition}]@{v.version}" for k, v in lf_context.used.items()},
    }
    ref = store.write_tables(LF_VOTES.path[-1], str(i), tables, inputs=inputs, params=params)
    meta: dict[str, object] = {
        "dagster/row_count": votes.height,
        "labeling_functions": len(lfs),
        "lf_summary": dg.MetadataValue.md(markdown_table(_fmt(analysis))),
        "abstain_only_rows": int((votes.select([lf.name for lf in lfs]).to_numpy() == -1).all(axis=1).sum()),
        "gold_rows": 0 if gold is None else gold.height,
        "path": dg.MetadataValue.path(str(ref.path)),
        "version": ref.version,
    }
    if model_names:
        summary = (
            app.scores.select(model_names)
            .describe()
            .filter(pl.col("statistic").is_in(["mean", "min", "25%", "50%", "75%", "max"]))
        )
        meta["model_scores"] = dg.MetadataValue.md(markdown_table(_fmt(summary)))
        meta["models"] = dg.MetadataValue.json(params["models"])
    if clf:
        counts = rows.group_by("task_type", "task_type_source").len().sort("task_type", "task_type_source")
        meta["task_types"] = dg.MetadataValue.md(markdown_table(counts))
    if stale:
        meta["stale_gold_rows"] = stale
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))


@dg.asset(
    key=QUALITY_LABELS,
    group_name="labeling",
    kinds={"snorkel", "parquet"},
    code_version="4",
    partitions_def=ITERATIONS,
    deps=[LF_VOTES],
    description="Snorkel LabelModel on the label matrix: P(high quality) per candidate, the votes behind each "
    "label (name@version=vote), majority vote as baseline; per-LF analysis (coverage, overlaps, conflicts, "
    "polarity, estimated/gold accuracy, length correlation, what gold did to it: an LF gold shows worse than "
    "chance is flagged or, with gold_lf_filter: disable, left out of the fit), P(high)'s length correlation, "
    "gold accuracy/F1.",
)
def quality_labels(
    context: dg.AssetExecutionContext, storage: StorageResource, recipe: RecipeResource
) -> dg.MaterializeResult:
    from prefscale.labeling.gold_filter import gold_lf_filter
    from prefscale.labeling.label_model import fit_label_model, gold_metrics

    r = recipe.load()
    i = iteration_of(context, r.iterations)
    store = storage.store
    votes_ref = store.current(LF_VOTES.path[-1], str(i))
    votes, lengths = read_votes_with_lengths(votes_ref)  # and the lengths of the responses labelled
    # The functions as they were when the matrix was made (names and versions), not as the recipe says now.
    try:
        catalog = store.read_frame(LF_VOTES.path[-1], str(i), "functions").filter(
            pl.col("kind") != "task_classifier"
        )
    except FileNotFoundError:
        catalog = lf_catalog(r.labeling.all_functions)
    names = catalog["lf_name"].to_list()
    versions = dict(zip(names, catalog["version"].to_list(), strict=True))
    gold, gold_ref, stale = iteration_gold(store, i)
    lm = r.labeling.label_model
    y_dev = None
    if gold is not None and lm.use_gold == "class_balance":
        y_dev = gold["label"].to_numpy().astype(np.int64)
    try:  # an LF gold shows worse than chance is flagged, or with `gold_lf_filter: disable` left out of the fit
        verdict = gold_lf_filter(votes, names, gold, lm.gold_lf_filter, lm.gold_min_votes)
    except ValueError as e:  # every LF would be disabled: nothing to fit on
        raise dg.Failure(description=str(e)) from e
    kept = verdict.kept(names)
    res = fit_label_model(votes, kept, **lm.fit_options(), seed=r.seed, versions=versions, y_dev=y_dev)
    analysis = lf_analysis(votes, catalog_entries(catalog), gold, res.weights, lengths, verdict.actions)
    analysis = analysis.select(pl.lit(i, pl.Int32).alias("iteration"), pl.all().exclude("iteration"))
    tables = {"data": res.labels, "analysis": analysis, "label_model": res.params}
    metrics = None
    if gold is not None:
        metrics = gold_metrics(res.labels, gold).with_columns(pl.lit(i, pl.Int32).alias("iteration"))
        tables["gold_metrics"] = metrics
    params = {
        "label_model": "snorkel.LabelModel",
        **lm.model_dump(mode="json"),
        "seed": r.seed,
        "lf_accuracies": res.weights,
        "lf_versions": versions,
        "gold_rows": 0 if gold is None else gold.height,
        "gold_disabled_lfs": list(verdict.disabled),
    }
    inputs = [votes_ref, *([gold_ref] if gold is not None and gold_ref else [])]
    ref = store.write_tables(QUALITY_LABELS.path[-1], str(i), tables, inputs=inputs, params=params)
    meta: dict[str, object] = {
        "dagster/row_count": res.labels.height,
        "share_high": round(res.class_balance[1], 4),
        "mean_p_high": round(float(res.labels["p_high"].mean() or 0.0), 4),
        "agreement_with_majority_vote": round(res.agreement_with_majority_vote(), 4),
        "label_length_correlation": label_length_correlation(res.labels, lengths),
        "lf_accuracies": dg.MetadataValue.md(
            markdown_table(
                _fmt(analysis.select("lf_name", "lf_version", "estimated_accuracy", "empirical_accuracy"))
            )
        ),
        "gold_lf_actions": dg.MetadataValue.md(verdict.markdown() or "none"),
        "lf_analysis": dg.MetadataValue.md(markdown_table(_fmt(analysis.drop("iteration")))),
        "gold_rows": 0 if gold is None else gold.height,
        "path": dg.MetadataValue.path(str(ref.path)),
        "version": ref.version,
    }
    if metrics is not None:
        meta["gold_metrics"] = dg.MetadataValue.md(markdown_table(_fmt(metrics.drop("iteration"))))
        for row in metrics.iter_rows(named=True):
            for k in ("accuracy", "f1"):
                if row[k] is not None:
                    meta[f"gold_{k}_{row['model']}"] = round(row[k], 4)
    if stale:
        meta["stale_gold_rows"] = stale
    return dg.MaterializeResult(metadata=meta, data_version=dg.DataVersion(ref.version))
