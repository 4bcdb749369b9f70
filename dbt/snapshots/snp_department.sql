{#- 科室历史 (SCD2): a version per change of a department, valid from the source's update time. -#}
{% snapshot snp_department %}
{{ config(unique_key='department_key', strategy='timestamp', updated_at='updated_at') }}
select
    *,
    -- Beijing wall-clock time, the same kind of timestamp dbt stamps invalidations with
    coalesce(source_updated_at, '2000-01-01 00:00:00+08'::timestamptz) at time zone 'Asia/Shanghai' as updated_at,
    current_timestamp as captured_at
from {{ ref('dim_department') }}
{% endsnapshot %}
