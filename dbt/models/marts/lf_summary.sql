-- One row per (iteration, labeling function): how much it votes, with whom it agrees, and how accurate it is.
select
    cast(iteration as integer) as iteration,
    lf_name,
    lf_version,
    cast(iteration as varchar) || ':' || lf_name as lf_key,
    kind,
    polarity,
    coverage,
    "overlaps",  -- quoted: OVERLAPS is an SQL keyword
    conflicts,
    estimated_accuracy,
    n_gold,
    gold_correct,
    gold_incorrect,
    empirical_accuracy
from {{ source('labeling', 'lf_analysis') }}
order by iteration, lf_name
