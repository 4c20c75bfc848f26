-- Every evaluated generator: the base (iteration 0), each DPO checkpoint, and each checkpoint with best-of-N at
-- inference (asset best_of_n, when materialized). `variant` is base | checkpoint | best_of_n and `generator`
-- the leaderboard's name for the row: base, dpo-iter<i>, dpo-iter<i>+bo<N>.
-- read_parquet fails on a glob that matches nothing, so best_of_n's results are read only when they exist
-- (a DuckDB glob() at run time). The path is the source's external_location in sources.yml (kept in step).
-- depends_on: {{ source('artifacts', 'best_of_n') }}
{%- set bon_glob = env_var('PREFSCALE_HOME', '.prefscale') ~ '/artifacts/best_of_n/*/current/results.parquet' -%}
{%- set has_bon = false -%}
{%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ bon_glob ~ "')") -%}
    {%- set has_bon = found.columns[0].values()[0] > 0 -%}
{%- endif %}

with runs as (
    select * from {{ source('artifacts', 'eval_baseline') }}
    union all by name
    select * from {{ source('artifacts', 'eval_results') }}
{%- if has_bon %}
    union all by name
    select * exclude (best_of_n, best_of_n_source) from read_parquet('{{ bon_glob }}', union_by_name=true)
{%- endif %}
)

{%- if has_bon %}
select
    * exclude (variant, generator),
    coalesce(variant, case when cast(iteration as integer) = 0 then 'base' else 'checkpoint' end) as variant,
    coalesce(
        generator,
        case when cast(iteration as integer) = 0 then 'base' else 'dpo-iter' || cast(iteration as integer) end
    ) as generator
from runs
{%- else %}
select
    *,
    case when cast(iteration as integer) = 0 then 'base' else 'checkpoint' end as variant,
    case when cast(iteration as integer) = 0 then 'base' else 'dpo-iter' || cast(iteration as integer) end
        as generator
from runs
{%- endif %}
