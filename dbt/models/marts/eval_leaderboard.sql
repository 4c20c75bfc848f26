-- One row per (iteration, judge): win rate against the base, counts, length and mean adherence.
select
    cast(iteration as integer) as iteration,
    model,
    judge,
    win_rate,
    n_wins,
    n_losses,
    n_draws,
    n_total,
    avg_length,
    mean_adherence,
    mean_rubric_score,
    unfinished_rate,
    mean_adherence - first_value(mean_adherence) over (partition by judge order by iteration) as adherence_gain
from {{ ref('stg_eval_runs') }}
order by iteration, judge
