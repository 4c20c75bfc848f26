-- eval_leaderboard has one row per (iteration, judge) for each reference: any duplicate fails the build.
select iteration, judge, reference, count(*) as n_rows
from {{ ref('eval_leaderboard') }}
group by iteration, judge, reference
having count(*) > 1
