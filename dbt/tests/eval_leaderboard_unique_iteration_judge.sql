-- eval_leaderboard has one row per (iteration, generator, judge) for each reference: any duplicate fails the build.
select iteration, generator, judge, reference, count(*) as n_rows
from {{ ref('eval_leaderboard') }}
group by iteration, generator, judge, reference
having count(*) > 1
