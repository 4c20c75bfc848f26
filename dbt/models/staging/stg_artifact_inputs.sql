-- The lineage edges: one row per (stored version, upstream version it records in its manifest's `inputs`),
-- with the upstream digest recorded at the time.
with edges as (
    select
        m.asset,
        m."partition",
        m.version,
        m.artifact_key,
        unnest(
            json_transform(
                m.inputs,
                '[{"asset": "VARCHAR", "partition": "VARCHAR", "version": "VARCHAR", "sha256": "VARCHAR"}]'
            )
        ) as i
    from {{ ref('stg_artifact_manifests') }} m
)

select
    asset,
    "partition",
    version,
    artifact_key,
    i.asset as input_asset,
    i."partition" as input_partition,
    i.version as input_version,
    i.asset || '[' || i."partition" || ']@' || i.version as input_key,
    nullif(i.sha256, '') as recorded_sha256
from edges
