-- One row per sampled candidate of every iteration's current `candidates` version.
{% if artifacts_exist('candidates/*/current/data.parquet') %}
select
    {{ partition_of('filename') }} as iteration,
    {{ partition_of('filename') }} || ':' || candidate_id as candidate_key,
    candidate_id,
    prompt_id,
    cast(sample_idx as integer) as sample_idx,
    length(response) as response_chars,
    finish_reason
from {{ source('alignment', 'candidates') }}
{% else %}
select
    cast(null as integer) as iteration,
    cast(null as varchar) as candidate_key,
    cast(null as varchar) as candidate_id,
    cast(null as varchar) as prompt_id,
    cast(null as integer) as sample_idx,
    cast(null as bigint) as response_chars,
    cast(null as varchar) as finish_reason
where false
{% endif %}
