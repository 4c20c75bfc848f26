-- The audit chain of every current DPO checkpoint as a table (what `prefscale audit <iteration>` prints):
-- one row per (checkpoint iteration, artifact version): the checkpoint itself, every version it was made from,
-- transitively through the manifests' recorded inputs (prompts, candidates, LF votes, labels, rewards, pairs,
-- the policies it started from back to the base), and the evaluations made from it.
--   recorded_sha256  the digest the referring artifact(s) recorded for it (null for the checkpoint and its
--                    evaluations, which nothing upstream refers to)
--   stored_sha256    the digest published beside the version (<version>.sha256); null when it is gone
--   sha256_matches   every recorded digest agrees with the stored one, where both exist, as `prefscale audit`
--                    compares them (tests/lineage_audit_hashes_match.sql fails the build otherwise); a missing
--                    version fails the relationships test on artifact_key. Re-hashing files is the audit's job.
with recursive
manifests as (
    select * from {{ ref('stg_artifact_manifests') }}
),

edges as (
    select * from {{ ref('stg_artifact_inputs') }}
),

roots as (
    select cast("partition" as integer) as checkpoint_iteration, version as checkpoint_version, artifact_key
    from manifests
    where asset = 'dpo_checkpoint' and is_current
),

-- distinct (root, node, depth) states: UNION (not UNION ALL) keeps the walk linear in the graph's size even
-- where many paths lead to the same version (every iteration reaches the base through several)
chain(checkpoint_iteration, artifact_key, depth) as (
    select checkpoint_iteration, artifact_key, 0 from roots
    union
    select c.checkpoint_iteration, e.input_key, c.depth + 1
    from chain c
    join edges e on e.artifact_key = c.artifact_key
),

nodes as (
    select checkpoint_iteration, artifact_key, min(depth) as depth
    from chain
    group by checkpoint_iteration, artifact_key
),

-- what the versions inside a checkpoint's chain recorded about each node
recorded as (
    select n.checkpoint_iteration, e.input_key as artifact_key,
        min(e.recorded_sha256) as recorded_sha256,
        count(*) as n_referrers,
        count(distinct e.recorded_sha256) as n_distinct_recorded
    from nodes n
    join edges e on e.artifact_key = n.artifact_key
    group by n.checkpoint_iteration, e.input_key
),

upstream as (
    select
        n.checkpoint_iteration,
        case when n.depth = 0 then 'checkpoint' else 'upstream' end as relation,
        n.depth,
        n.artifact_key,
        r.recorded_sha256,
        coalesce(r.n_referrers, 0) as n_referrers,
        coalesce(r.n_distinct_recorded, 0) as n_distinct_recorded
    from nodes n
    left join recorded r using (checkpoint_iteration, artifact_key)
),

evaluations as (
    select distinct
        r.checkpoint_iteration,
        'evaluation' as relation,
        1 as depth,
        e.artifact_key,
        cast(null as varchar) as recorded_sha256,
        0 as n_referrers,
        0 as n_distinct_recorded
    from roots r
    join edges e
        on e.asset = 'eval_results' and e.input_asset = 'dpo_checkpoint' and e.input_version = r.checkpoint_version
),

rows as (
    select * from upstream
    union all
    select * from evaluations
),

parsed as (
    select
        rows.*,
        regexp_extract(rows.artifact_key, '^([^\[]+)\[([^\]]+)\]@(.+)$', ['asset', 'part', 'version']) as loc
    from rows
)

select
    p.checkpoint_iteration,
    cast(p.checkpoint_iteration as varchar) || ':' || p.artifact_key as lineage_key,
    p.relation,
    p.depth,
    p.artifact_key,
    p.loc.asset as asset,
    p.loc.part as "partition",
    p.loc.version as version,
    p.recorded_sha256,
    coalesce(m.stored_sha256, d.stored_sha256) as stored_sha256,
    m.artifact_key is not null as manifest_present,
    coalesce(m.is_current, false) as is_current,
    p.n_referrers,
    p.n_distinct_recorded <= 1
        and (
            p.recorded_sha256 is null
            or coalesce(m.stored_sha256, d.stored_sha256) is null
            or p.recorded_sha256 = coalesce(m.stored_sha256, d.stored_sha256)
        ) as sha256_matches,
    m.params
from parsed p
left join manifests m on m.artifact_key = p.artifact_key
left join {{ ref('stg_artifact_digests') }} d
    on d.asset = p.loc.asset and d."partition" = p.loc.part and d.version = p.loc.version
order by p.checkpoint_iteration, p.depth, p.artifact_key
