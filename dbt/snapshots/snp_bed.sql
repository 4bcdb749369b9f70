{#- 床位历史 (SCD2): a version per change of a bed, valid from the source's update time. The HIS also updates a bed
    at every admission and discharge (occupancy is not kept here), which only adds identical versions. -#}
{% snapshot snp_bed %}
{{ config(unique_key='bed_key', strategy='timestamp', updated_at='updated_at') }}
select
    bed_key,
    source_system,
    bed_id,
    org_code,
    ward_code,
    ward_name,
    bed_kind,
    is_open,
    -- Beijing wall-clock time, the same kind of timestamp dbt stamps invalidations with
    coalesce(source_updated_at, '2000-01-01 00:00:00+08'::timestamptz) at time zone 'Asia/Shanghai' as updated_at,
    current_timestamp as captured_at
from {{ ref('stg_ods__bed') }}
{% endsnapshot %}
