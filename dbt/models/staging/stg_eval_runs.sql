-- Every evaluated model: the base (iteration 0) and each DPO checkpoint.
select * from {{ source('artifacts', 'eval_baseline') }}
union all by name
select * from {{ source('artifacts', 'eval_results') }}
