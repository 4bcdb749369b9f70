{#- 机构历史 (SCD2): the registry has no update time, so a version starts when a build first sees the change
    (strategy check on the institution's attributes). -#}
{% snapshot snp_organization %}
{{ config(unique_key='org_code', strategy='check',
          check_cols=['org_name', 'org_type', 'org_level', 'township', 'parent_org_code', 'open_beds', 'is_active']) }}
select
    *,
    current_timestamp as captured_at
from {{ ref('dim_organization') }}
{% endsnapshot %}
