"""`sme_annotations`: the SMEs' gold labels, ingested from the annotation files in PREFSCALE_HOME/annotations/
and, when LABEL_STUDIO_API_KEY is set, from Label Studio (rankings, and the blind evaluation's votes).

Every file and the tool's ranking project are parsed and validated against the candidates of every iteration
(`prefscale.labeling.gold`). One bad file or annotation fails the asset with its problems listed by line or task
id, and nothing is published: the current gold stays as it was. `sensors.annotations.sme_annotations_sensor`
requests this asset when the files or the tool's annotations change, then re-runs `quality_labels` for the
iterations whose gold changed (`affected_iterations` in the metadata) and `alpaca_eval_results` for those whose
votes changed (`votes_changed_iterations`).
"""

import json

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS
from prefscale.annotation.collect import collect, empty_agreement, empty_votes
from prefscale.annotation.label_studio import LabelStudioError
from prefscale.annotation.pairwise import changed_vote_iterations
from prefscale.labeling.gold import ANNOTATIONS_DIR, AnnotationsRejected, changed_iterations, load_annotations
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, ArtifactRef, MissingArtifactError
from resources import StorageResource
from resources.label_studio import LabelStudioResource

SME_ANNOTATIONS = dg.AssetKey("sme_annotations")


def known_candidates(store) -> tuple[pl.DataFrame, list, dict[str, str]]:
    """Every iteration's current candidates (id, prompt, iteration), their refs, and version per iteration."""
    frames, refs, versions = [], [], {}
    for key in ITERATIONS.get_partition_keys():
        try:
            ref = store.current(CANDIDATES.path[-1], key)
        except MissingArtifactError:
            continue
        df = pl.read_parquet(ref.file(), columns=["candidate_id", "prompt_id"])
        frames.append(df.with_columns(pl.lit(key).alias("iteration")))
        refs.append(ref)
        versions[key] = ref.version
    empty = pl.DataFrame(schema={"candidate_id": pl.String, "prompt_id": pl.String, "iteration": pl.String})
    return (pl.concat(frames) if frames else empty), refs, versions


def current_gold(store, table: str = "data") -> pl.DataFrame | None:
    """A table of the published gold (`data`, `votes`, ...), or None before the first ingestion (or before the
    table existed)."""
    try:
        return store.read_frame(SME_ANNOTATIONS.path[-1], UNPARTITIONED, table)
    except (MissingArtifactError, FileNotFoundError):
        return None


def sme_votes(store) -> tuple[ArtifactRef, pl.DataFrame] | None:
    """The SMEs' published blind-evaluation votes and the `sme_annotations` version holding them; None before
    any ingestion (the `sme` judge then has no votes)."""
    try:
        ref = store.current(SME_ANNOTATIONS.path[-1], UNPARTITIONED)
    except MissingArtifactError:
        return None
    path = ref.file("votes.parquet")
    return (ref, pl.read_parquet(path)) if path.is_file() else None


def _rejected(e: AnnotationsRejected) -> dg.Failure:
    return dg.Failure(
        description=f"annotations rejected, nothing was published:\n{e}",
        metadata={
            "rejected": dg.MetadataValue.json(
                {
                    name: [f"{e.units[name]} {n}: {m}" if n else m for n, m in lines]
                    for name, lines in e.problems.items()
                }
            )
        },
    )


@dg.asset(
    key=SME_ANNOTATIONS,
    group_name="labeling",
    kinds={"polars", "parquet"},
    code_version="2",
    deps=[CANDIDATES],
    description="SME gold labels from PREFSCALE_HOME/annotations/*.jsonl|csv (candidate_id,label or "
    "prompt_id,ranking) and from Label Studio (rankings; blind evaluation votes), validated against the "
    "candidates; a bad file or annotation fails the run and publishes nothing.",
)
def sme_annotations(
    context: dg.AssetExecutionContext, storage: StorageResource, label_studio: LabelStudioResource
) -> dg.MaterializeResult:
    store = storage.store
    folder = storage.root / ANNOTATIONS_DIR
    cands, refs, versions = known_candidates(store)
    votes, agreement, extra = empty_votes(), empty_agreement(), []
    if label_studio.configured:
        try:
            tool = collect(
                label_studio.client(), label_studio.ranking_project, label_studio.evaluation_project
            )
        except LabelStudioError as e:
            raise dg.Failure(description=f"could not read Label Studio: {e}") from None
        if tool.vote_problems:
            raise _rejected(
                AnnotationsRejected(
                    {tool.evaluation_source: tool.vote_problems}, {tool.evaluation_source: "task"}
                )
            )
        votes, agreement, extra = tool.votes, tool.agreement, [tool.ranking]
    try:
        ann = load_annotations(folder, cands, versions, extra)
    except AnnotationsRejected as e:
        raise _rejected(e) from None
    affected = changed_iterations(current_gold(store), ann.gold)
    votes_changed = changed_vote_iterations(current_gold(store, "votes"), votes)
    params = {
        "files": {r["file"]: r["sha256"] for r in ann.files.iter_rows(named=True)},
        "folder": str(folder),
        "label_studio": label_studio.address if label_studio.configured else None,
    }
    ref = store.write_tables(
        SME_ANNOTATIONS.path[-1],
        UNPARTITIONED,
        {
            "data": ann.gold,
            "rankings": ann.rankings,
            "files": ann.files,
            "votes": votes,
            "agreement": agreement,
        },
        inputs=refs,
        params=params,
    )
    per_iteration = ann.gold.group_by("iteration").agg(
        pl.len().alias("gold_labels"),
        (pl.col("label") == 1).sum().alias("high"),
        (pl.col("label") == 0).sum().alias("low"),
    )
    context.log.info(
        f"ingested {ann.files.height} annotation source(s) and {votes.height} evaluation vote(s); gold changed "
        f"for iterations {affected}, votes for {votes_changed}"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": ann.gold.height,
            "files": dg.MetadataValue.md(markdown_table(ann.files)) if ann.files.height else "none",
            "rankings": ann.rankings.height,
            "per_iteration": dg.MetadataValue.md(markdown_table(per_iteration.sort("iteration")))
            if per_iteration.height
            else "none",
            "affected_iterations": dg.MetadataValue.json(affected),
            "affected_iterations_csv": ",".join(affected),
            "votes": votes.height,
            "votes_changed_iterations": dg.MetadataValue.json(votes_changed),
            "annotator_agreement": dg.MetadataValue.md(_agreement_md(agreement)),
            "folder": dg.MetadataValue.path(str(folder)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
            "files_sha256": json.dumps(params["files"], sort_keys=True),
        },
        data_version=dg.DataVersion(ref.version),
    )


def _agreement_md(agreement: pl.DataFrame) -> str:
    if not agreement.height:
        return "no prompt was ranked by two SMEs"
    table = agreement.group_by("annotator_1", "annotator_2").agg(
        pl.len().alias("prompts"), pl.col("kendall_tau").mean().round(3).alias("mean_kendall_tau")
    )
    return markdown_table(table.sort("annotator_1", "annotator_2"))
