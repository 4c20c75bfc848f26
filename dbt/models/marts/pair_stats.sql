-- Per iteration: how many pairs pair selection kept and why it dropped the other prompts, the reward margins,
-- and the length bias (chosen minus rejected, in characters). Mirrors preference_pairs' Dagster metadata.
with pairs as (
    select * from {{ ref('stg_preference_pairs') }}
),

dropped as (
    select
        iteration,
        count(*) as dropped_prompts,
        count(*) filter (where reason = 'identical candidates') as dropped_identical_candidates,
        count(*) filter (where reason = 'tied rewards') as dropped_tied_rewards,
        count(*) filter (where reason = 'margin below min_margin') as dropped_below_min_margin,
        count(*) filter (where reason = 'identical best and worst') as dropped_identical_best_and_worst,
        count(*) filter (where reason = 'no distinct pair above min_margin') as dropped_no_eligible_pair
    from {{ ref('stg_pairs_dropped') }}
    group by iteration
),

candidates as (
    select iteration, count(*) as candidates
    from {{ ref('stg_candidates') }}
    group by iteration
),

settings as (
    select
        cast("partition" as integer) as iteration,
        version as pairs_version,
        json_extract_string(params, '$.strategy') as strategy,
        cast(json_extract(params, '$.min_margin') as double) as min_margin
    from {{ ref('stg_artifact_manifests') }}
    where asset = 'preference_pairs' and is_current
),

stats as (
    select
        iteration,
        count(*) as pairs,
        avg(margin) as mean_margin,
        median(margin) as median_margin,
        min(margin) as min_margin_observed,
        -- the raw reward margin is <= 0 where a finished response was chosen over a higher-rewarded one cut at
        -- the token limit (unfinished_is_worst); the asset check margins_positive checks the ranking key
        count(*) filter (where not margin > 0) as raw_margin_non_positive,
        avg(length_diff) as mean_length_diff,
        median(length_diff) as median_length_diff,
        avg(cast(length_diff > 0 as double)) as chosen_longer_share,
        avg(chosen_chars) as mean_chosen_chars,
        avg(rejected_chars) as mean_rejected_chars,
        count(*) filter (where rejected_unfinished) as rejected_unfinished
    from pairs
    group by iteration
)

select
    s.iteration,
    st.strategy,
    st.min_margin,
    st.pairs_version,
    s.pairs,
    s.pairs + coalesce(d.dropped_prompts, 0) as prompts,
    c.candidates,
    s.pairs / (s.pairs + coalesce(d.dropped_prompts, 0)) as pair_rate,
    coalesce(d.dropped_prompts, 0) as dropped_prompts,
    coalesce(d.dropped_identical_candidates, 0) as dropped_identical_candidates,
    coalesce(d.dropped_tied_rewards, 0) as dropped_tied_rewards,
    coalesce(d.dropped_below_min_margin, 0) as dropped_below_min_margin,
    coalesce(d.dropped_identical_best_and_worst, 0) as dropped_identical_best_and_worst,
    coalesce(d.dropped_no_eligible_pair, 0) as dropped_no_eligible_pair,
    s.mean_margin,
    s.median_margin,
    s.min_margin_observed,
    s.raw_margin_non_positive,
    s.mean_length_diff,
    s.median_length_diff,
    s.chosen_longer_share,
    s.mean_chosen_chars,
    s.mean_rejected_chars,
    s.rejected_unfinished
from stats s
left join dropped d using (iteration)
left join settings st using (iteration)
left join candidates c using (iteration)
order by s.iteration
