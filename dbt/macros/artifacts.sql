{#
  Paths of the Python assets' artifacts (PREFSCALE_HOME/artifacts/<asset>/<partition>/<version>/...), and whether
  any file matches a glob yet. read_parquet / read_text fail on a glob that matches nothing, so a staging model
  over an asset that has not been materialized yet selects an empty, typed relation instead (see
  stg_reward_scores.sql): the other models still build.
#}

{% macro artifacts_root() -%}
    {{ env_var('PREFSCALE_HOME', '.prefscale') }}/artifacts
{%- endmacro %}

{% macro artifacts_exist(pattern) -%}
    {#- pattern: relative to artifacts_root(), e.g. 'reward_scores/*/current/data.parquet'.
        At parse time (execute is false) it answers true, so dbt records the source() dependency. -#}
    {%- if not execute -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set found = run_query("select count(*) from glob('" ~ artifacts_root() ~ "/" ~ pattern ~ "')") -%}
    {{ return(found.columns[0].values()[0] > 0) }}
{%- endmacro %}

{% macro partition_of(filename_column) -%}
    {#- The partition (iteration) of a file read through <asset>/<partition>/current/<file>. -#}
    cast(regexp_extract({{ filename_column }}, '/artifacts/[^/]+/([^/]+)/current/[^/]+$', 1) as integer)
{%- endmacro %}
