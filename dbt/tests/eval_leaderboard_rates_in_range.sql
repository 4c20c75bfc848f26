-- Rates are on the 0-1 scale (alpaca_eval's 0-100 divided by 100), and the counts add up.
select *
from {{ ref('eval_leaderboard') }}
where win_rate < 0 or win_rate > 1
   or standard_error < 0 or standard_error > 1
   or lc_win_rate < 0 or lc_win_rate > 1
   or n_wins + n_losses + n_draws != n_total
