-- The digest recorded beside every stored version when it was published: <asset>/<partition>/<version>.sha256.
{% if artifacts_exist('*/*/*.sha256') %}
with sidecars as (
    select
        regexp_extract(
            filename, '/artifacts/([^/]+)/([^/]+)/([^/]+)\.sha256$', ['asset', 'part', 'version']
        ) as loc,
        trim(content, ' ' || chr(10) || chr(13) || chr(9)) as stored_sha256
    from {{ source('lineage', 'artifact_records') }}
    where ends_with(filename, '.sha256')
)

select loc.asset as asset, loc.part as "partition", loc.version as version, stored_sha256
from sidecars
where not starts_with(loc.version, '.')
{% else %}
select
    cast(null as varchar) as asset,
    cast(null as varchar) as "partition",
    cast(null as varchar) as version,
    cast(null as varchar) as stored_sha256
where false
{% endif %}
