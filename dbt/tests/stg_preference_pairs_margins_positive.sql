-- Pair selection keeps only pairs whose chosen reward is above the rejected one.
select iteration, prompt_id, margin
from {{ ref('stg_preference_pairs') }}
where not (margin > 0)
