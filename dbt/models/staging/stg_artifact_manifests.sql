-- One row per stored artifact version with a manifest: where it lives, whether it is its slot's `current`
-- version, its folder digest (the `<version>.sha256` sidecar), its parameters and files (JSON).
-- The `*/*/*` glob also reads each `current/_manifest.json` through the symlink: a version is current when its
-- manifest is byte-identical to that copy (a manifest lists every file's sha256, so no two versions share one).
-- Folders whose names start with a dot are unfinished temporary builds (prefscale.storage) and are skipped.
{% if artifacts_exist('*/*/*/_manifest.json') %}
with files as (
    select
        regexp_extract(
            filename, '/artifacts/([^/]+)/([^/]+)/([^/]+)/_manifest\.json$', ['asset', 'part', 'folder']
        ) as loc,
        content
    from {{ source('lineage', 'artifact_records') }}
    where ends_with(filename, '/_manifest.json')
        and not starts_with(regexp_extract(filename, '/([^/]+)/_manifest\.json$', 1), '.')
),

-- one scan, grouped by content: a version's folder and the `current` copy of it fall into one group
-- (no self-join: DuckDB 2.0 hung on `limit` over a view joining this CTE with itself)
versions as (
    select
        loc.asset as asset,
        loc.part as "partition",
        max(loc.folder) filter (where loc.folder != 'current') as version,
        bool_or(loc.folder = 'current') as is_current,
        content
    from files
    group by loc.asset, loc.part, content
)

select
    v.asset,
    v."partition",
    v.version,
    v.asset || '[' || v."partition" || ']@' || v.version as artifact_key,
    d.stored_sha256,
    v.is_current,
    cast(json_extract(v.content, '$.params') as varchar) as params,
    cast(json_extract(v.content, '$.files') as varchar) as files,
    cast(json_extract(v.content, '$.inputs') as varchar) as inputs
from versions v
left join {{ ref('stg_artifact_digests') }} d
    on d.asset = v.asset and d."partition" = v."partition" and d.version = v.version
where v.version is not null
{% else %}
select
    cast(null as varchar) as asset,
    cast(null as varchar) as "partition",
    cast(null as varchar) as version,
    cast(null as varchar) as artifact_key,
    cast(null as varchar) as stored_sha256,
    cast(null as boolean) as is_current,
    cast(null as varchar) as params,
    cast(null as varchar) as files,
    cast(null as varchar) as inputs
where false
{% endif %}
