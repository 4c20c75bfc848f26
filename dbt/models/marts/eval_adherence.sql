-- Per generator (base, dpo-iter<i>, dpo-iter<i>+bo<N>) and SME preference: the share of held-out responses
-- that satisfy it.
with wide as (
    select * exclude (judge, win_rate, n_wins, n_losses, n_draws, n_total, avg_length, mean_adherence,
                      finished_adherence, mean_rubric_score, unfinished_rate)
    from {{ ref('stg_eval_runs') }}
),

long as (
    unpivot wide on columns('^adherence_') into name preference value rate
)

select
    cast(iteration as integer) as iteration,
    model,
    variant,
    generator,
    replace(preference, 'adherence_', '') as preference,
    rate
from long
order by iteration, generator, preference
