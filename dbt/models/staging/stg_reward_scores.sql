-- One row per (iteration, candidate, reward source): each source's own score (the `score_<source>` columns of
-- reward_scores), and for an ensemble the combined reward as source `ensemble`. With a single source the final
-- reward is that source's score, so it is not repeated.
{% if artifacts_exist('reward_scores/*/current/data.parquet') %}
with scores as (
    select {{ partition_of('filename') }} as iteration, * exclude (filename)
    from {{ source('alignment', 'reward_scores') }}
),

per_source as (
    unpivot (select iteration, candidate_id, prompt_id, columns('^score_') from scores)
    on columns('^score_')
    into name score_column value score
)

select
    iteration,
    candidate_id,
    prompt_id,
    replace(score_column, 'score_', '') as reward_source,
    cast(score as double) as score
from per_source

union all

select iteration, candidate_id, prompt_id, 'ensemble' as reward_source, cast(reward as double) as score
from scores
where source = 'ensemble'
{% else %}
select
    cast(null as integer) as iteration,
    cast(null as varchar) as candidate_id,
    cast(null as varchar) as prompt_id,
    cast(null as varchar) as reward_source,
    cast(null as double) as score
where false
{% endif %}
