"""`sme_annotations`: the SMEs' gold labels, ingested from the annotation files in PREFSCALE_HOME/annotations/.

Every file there is parsed and validated against the candidates of every iteration (`prefscale.annotations`).
One bad file fails the asset with its problems listed by line, and nothing is published: the current gold stays
as it was. `sensors.annotations.sme_annotations_sensor` requests this asset when the files change, then
re-runs `quality_labels` for the iterations whose gold changed (`affected_iterations` in the metadata).
"""

import json

import dagster as dg
import polars as pl

from assets.candidates import CANDIDATES
from assets.partitions import ITERATIONS
from prefscale.labeling.gold import ANNOTATIONS_DIR, AnnotationsRejected, changed_iterations, load_annotations
from prefscale.report import markdown_table
from prefscale.storage import UNPARTITIONED, MissingArtifactError
from resources import StorageResource

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


def current_gold(store) -> pl.DataFrame | None:
    """The published gold table, or None before the first ingestion."""
    try:
        return store.read_frame(SME_ANNOTATIONS.path[-1], UNPARTITIONED)
    except MissingArtifactError:
        return None


@dg.asset(
    key=SME_ANNOTATIONS,
    group_name="labeling",
    kinds={"polars", "parquet"},
    code_version="1",
    deps=[CANDIDATES],
    description="SME gold labels from PREFSCALE_HOME/annotations/*.jsonl|csv (candidate_id,label or "
    "prompt_id,ranking), validated against the candidates; a bad file fails the run and publishes nothing.",
)
def sme_annotations(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    store = storage.store
    folder = storage.root / ANNOTATIONS_DIR
    cands, refs, versions = known_candidates(store)
    try:
        ann = load_annotations(folder, cands, versions)
    except AnnotationsRejected as e:
        raise dg.Failure(
            description=f"annotation files rejected, nothing was published:\n{e}",
            metadata={
                "rejected_files": dg.MetadataValue.json(
                    {
                        name: [f"line {n}: {m}" if n else m for n, m in lines]
                        for name, lines in e.problems.items()
                    }
                )
            },
        ) from None
    affected = changed_iterations(current_gold(store), ann.gold)
    params = {
        "files": {r["file"]: r["sha256"] for r in ann.files.iter_rows(named=True)},
        "folder": str(folder),
    }
    ref = store.write_tables(
        SME_ANNOTATIONS.path[-1],
        UNPARTITIONED,
        {"data": ann.gold, "rankings": ann.rankings, "files": ann.files},
        inputs=refs,
        params=params,
    )
    per_iteration = ann.gold.group_by("iteration").agg(
        pl.len().alias("gold_labels"),
        (pl.col("label") == 1).sum().alias("high"),
        (pl.col("label") == 0).sum().alias("low"),
    )
    context.log.info(
        f"ingested {ann.files.height} annotation file(s); gold changed for iterations {affected}"
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
            "folder": dg.MetadataValue.path(str(folder)),
            "path": dg.MetadataValue.path(str(ref.path)),
            "version": ref.version,
            "files_sha256": json.dumps(params["files"], sort_keys=True),
        },
        data_version=dg.DataVersion(ref.version),
    )
