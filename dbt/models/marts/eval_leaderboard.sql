-- One row per (iteration, generator, judge, reference): win rate against the reference, its standard error and
-- length-controlled win rate, counts, length, and (for the SME rubric) mean adherence. `variant` is base,
-- checkpoint or best_of_n (the checkpoint with best-of-N at inference, asset best_of_n); `generator` names the
-- row: base, dpo-iter<i>, dpo-iter<i>+bo<N>.
--
-- Rows come from two places:
--   * stg_eval_runs (eval_baseline + eval_results): the SME rubric judge against the base's held-out samples,
--     with adherence; standard_error / lc_win_rate come from alpaca_eval_results' sme_rubric row when it has
--     one for the same reference (heldout_base; the two win rates are the same computation);
--   * alpaca_eval_results' metrics (source artifacts.alpaca_eval_results): every other judge, and the rubric
--     against another reference (alpaca_eval or a file).
-- read_parquet fails on a glob that matches nothing, so the metrics files are read only when they exist
-- (a DuckDB glob() at run time): the warehouse also builds before alpaca_eval_results is materialized.
-- The location is the source's external_location in sources.yml (kept in step by hand).
{%- set alpaca_glob = env_var('PREFSCALE_HOME', '.prefscale') ~ '/artifacts/alpaca_eval_results/*/current/metrics.parquet' -%}
{%- set has_alpaca = false -%}
{%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ alpaca_glob ~ "')") -%}
    {%- set has_alpaca = found.columns[0].values()[0] > 0 -%}
{%- endif %}

with rubric as (
    select
        cast(iteration as integer) as iteration,
        model,
        variant,
        generator,
        judge,
        'heldout_base' as reference,
        win_rate,
        n_wins,
        n_losses,
        n_draws,
        n_total,
        avg_length,
        mean_adherence,
        finished_adherence,
        mean_rubric_score,
        unfinished_rate
    from {{ ref('stg_eval_runs') }}
),

alpaca as (
{%- if has_alpaca %}
    -- every partition repeats the base's rows (iteration 0): keep the newest partition's copy
    select
        cast(iteration as integer) as iteration,
        model,
        variant,
        judge,
        reference,
        win_rate,
        standard_error,
        lc_win_rate,
        discrete_win_rate,
        cast(n_wins as integer) as n_wins,
        cast(n_wins_base as integer) as n_losses,
        cast(n_draws as integer) as n_draws,
        cast(n_total as integer) as n_total,
        cast(avg_length as double) as avg_length,
        unfinished_rate
    from read_parquet('{{ alpaca_glob }}', union_by_name=true)
    where variant in ('base', 'checkpoint', 'best_of_n')
    qualify row_number() over (
        partition by iteration, variant, judge, reference order by cast(source_partition as integer) desc
    ) = 1
{%- else %}
    select
        cast(null as integer) as iteration,
        cast(null as varchar) as model,
        cast(null as varchar) as variant,
        cast(null as varchar) as judge,
        cast(null as varchar) as reference,
        cast(null as double) as win_rate,
        cast(null as double) as standard_error,
        cast(null as double) as lc_win_rate,
        cast(null as double) as discrete_win_rate,
        cast(null as integer) as n_wins,
        cast(null as integer) as n_losses,
        cast(null as integer) as n_draws,
        cast(null as integer) as n_total,
        cast(null as double) as avg_length,
        cast(null as double) as unfinished_rate
    where false
{%- endif %}
),

generators as (
    select distinct iteration, variant, generator from rubric
),

board as (
    select
        r.iteration,
        r.model,
        r.variant,
        r.generator,
        r.judge,
        r.reference,
        r.win_rate,
        a.standard_error,
        a.lc_win_rate,
        a.discrete_win_rate,
        r.n_wins,
        r.n_losses,
        r.n_draws,
        r.n_total,
        r.avg_length,
        r.mean_adherence,
        r.finished_adherence,
        r.mean_rubric_score,
        r.unfinished_rate
    from rubric r
    left join alpaca a using (iteration, variant, judge, reference)

    union all

    select
        a.iteration,
        a.model,
        a.variant,
        coalesce(
            g.generator,
            case a.variant
                when 'base' then 'base'
                when 'checkpoint' then 'dpo-iter' || a.iteration
                else 'dpo-iter' || a.iteration || '+' || a.variant
            end
        ) as generator,
        a.judge,
        a.reference,
        a.win_rate,
        a.standard_error,
        a.lc_win_rate,
        a.discrete_win_rate,
        a.n_wins,
        a.n_losses,
        a.n_draws,
        a.n_total,
        a.avg_length,
        cast(null as double) as mean_adherence,
        cast(null as double) as finished_adherence,
        cast(null as double) as mean_rubric_score,
        a.unfinished_rate
    from alpaca a
    left join generators g using (iteration, variant)
    anti join rubric r using (iteration, variant, judge, reference)
)

select
    *,
    mean_adherence - first_value(mean_adherence) over (
        partition by judge, reference order by iteration, generator
    ) as adherence_gain
from board
order by iteration, judge, reference, generator
