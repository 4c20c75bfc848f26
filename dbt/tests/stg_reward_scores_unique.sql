-- One score per (iteration, candidate, reward source).
select iteration, candidate_id, reward_source, count(*) as n_rows
from {{ ref('stg_reward_scores') }}
group by iteration, candidate_id, reward_source
having count(*) > 1
