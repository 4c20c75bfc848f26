-- One row per preference pair of every iteration's current `preference_pairs` version.
{% if artifacts_exist('preference_pairs/*/current/data.parquet') %}
select
    {{ partition_of('filename') }} as iteration,
    {{ partition_of('filename') }} || ':' || prompt_id as pair_key,
    prompt_id,
    chosen_id,
    rejected_id,
    {{ partition_of('filename') }} || ':' || chosen_id as chosen_key,
    {{ partition_of('filename') }} || ':' || rejected_id as rejected_key,
    cast(chosen_reward as double) as chosen_reward,
    cast(rejected_reward as double) as rejected_reward,
    cast(margin as double) as margin,
    cast(length_diff as integer) as length_diff,
    length(chosen[1].content) as chosen_chars,
    length(rejected[1].content) as rejected_chars,
    rejected_unfinished
from {{ source('alignment', 'preference_pairs') }}
{% else %}
select
    cast(null as integer) as iteration,
    cast(null as varchar) as pair_key,
    cast(null as varchar) as prompt_id,
    cast(null as varchar) as chosen_id,
    cast(null as varchar) as rejected_id,
    cast(null as varchar) as chosen_key,
    cast(null as varchar) as rejected_key,
    cast(null as double) as chosen_reward,
    cast(null as double) as rejected_reward,
    cast(null as double) as margin,
    cast(null as integer) as length_diff,
    cast(null as bigint) as chosen_chars,
    cast(null as bigint) as rejected_chars,
    cast(null as boolean) as rejected_unfinished
where false
{% endif %}
