-- One row per (iteration, labeling function): how much it votes, with whom it agrees, how accurate it is, how
-- much it tracks response length, and what SME gold did to it.
with analysis as (
    select * from {{ source('labeling', 'lf_analysis') }}
    -- analysis versions written before length_correlation or gold_action existed read them as null (when no
    -- version has them yet)
    union all by name
    select cast(null as double) as length_correlation, cast(null as varchar) as gold_action where false
)

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
    empirical_accuracy,
    length_correlation,
    gold_action
from analysis
order by iteration, lf_name
