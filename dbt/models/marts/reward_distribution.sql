-- Per iteration and reward source: how the reward scores are distributed, and how often a prompt's candidates
-- tie. Statistics are over the finite scores; `n_non_finite` counts the others (reward_scores' blocking check
-- `rewards_finite` keeps such an artifact from reaching the pairs). `length_correlation`: how much the source
-- tracks response length (Spearman, as `prefscale score`'s and lf_summary's `length_correlation`).
with scores as (
    select * from {{ ref('stg_reward_scores') }}
),

-- Average ranks (ties share the mean of their positions) of each finite score and its response's length, within
-- (iteration, reward source): Pearson's correlation of these ranks is Spearman's.
ranked as (
    select
        s.iteration,
        s.reward_source,
        rank() over (partition by s.iteration, s.reward_source order by s.score)
            + (count(*) over (partition by s.iteration, s.reward_source, s.score) - 1) / 2.0 as score_rank,
        rank() over (partition by s.iteration, s.reward_source order by c.response_chars)
            + (count(*) over (partition by s.iteration, s.reward_source, c.response_chars) - 1) / 2.0 as chars_rank
    from scores s
    join {{ ref('stg_candidates') }} c on c.iteration = s.iteration and c.candidate_id = s.candidate_id
    where isfinite(s.score) and c.response_chars is not null
),

length_corr as (
    select
        iteration,
        reward_source,
        -- null when it cannot be computed: fewer than two candidates, or constant scores or lengths
        case
            when count(*) > 1 and stddev_pop(score_rank) > 0 and stddev_pop(chars_rank) > 0
                then corr(score_rank, chars_rank)
        end as length_correlation
    from ranked
    group by iteration, reward_source
),

per_prompt as (
    select
        iteration,
        reward_source,
        prompt_id,
        count(*) as n,
        count(distinct score) as n_distinct,
        max(score) - min(score) as spread
    from scores
    where isfinite(score)
    group by iteration, reward_source, prompt_id
),

ties as (
    select
        iteration,
        reward_source,
        count(*) as prompts,
        -- best and worst closer than prefscale.pairs.selection.TIE_TOLERANCE: best_vs_worst drops the prompt (tied rewards)
        avg(cast(spread < 1e-6 as double)) as all_tied_prompt_share,
        -- at least two candidates with exactly the same score
        avg(cast(n_distinct < n as double)) as any_tie_prompt_share
    from per_prompt
    group by iteration, reward_source
),

stats as (
    select
        iteration,
        reward_source,
        count(*) as n,
        count(*) filter (where not isfinite(score)) as n_non_finite,
        avg(score) filter (where isfinite(score)) as mean,
        stddev_samp(score) filter (where isfinite(score)) as std,
        min(score) filter (where isfinite(score)) as min,
        quantile_cont(score, 0.1) filter (where isfinite(score)) as p10,
        quantile_cont(score, 0.25) filter (where isfinite(score)) as p25,
        quantile_cont(score, 0.5) filter (where isfinite(score)) as median,
        quantile_cont(score, 0.75) filter (where isfinite(score)) as p75,
        quantile_cont(score, 0.9) filter (where isfinite(score)) as p90,
        max(score) filter (where isfinite(score)) as max
    from scores
    group by iteration, reward_source
)

select
    s.iteration,
    s.reward_source,
    cast(s.iteration as varchar) || ':' || s.reward_source as distribution_key,
    s.n,
    s.n_non_finite,
    coalesce(t.prompts, 0) as prompts,
    s.mean,
    s.std,
    s.min,
    s.p10,
    s.p25,
    s.median,
    s.p75,
    s.p90,
    s.max,
    t.all_tied_prompt_share,
    t.any_tie_prompt_share,
    l.length_correlation
from stats s
left join ties t using (iteration, reward_source)
left join length_corr l using (iteration, reward_source)
order by s.iteration, s.reward_source
