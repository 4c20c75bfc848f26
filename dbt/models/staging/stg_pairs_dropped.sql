-- The prompts pair selection dropped, per iteration, with the reason (prefscale.pairs.selection.DROP_REASONS): the
-- dropped.parquet of every iteration's current preference_pairs version. Read here directly (the artifact's
-- dbt source is its data.parquet; a source maps to one Dagster asset key):
-- depends_on: {{ source('alignment', 'preference_pairs') }}
{% if artifacts_exist('preference_pairs/*/current/dropped.parquet') %}
select
    {{ partition_of('filename') }} as iteration,
    prompt_id,
    reason
from read_parquet(
    '{{ artifacts_root() }}/preference_pairs/*/current/dropped.parquet', union_by_name = true, filename = true
)
{% else %}
select cast(null as integer) as iteration, cast(null as varchar) as prompt_id, cast(null as varchar) as reason
where false
{% endif %}
