-- 问题数据: every failing row the rules found, with its lifecycle (open → closed when the corrected row was
-- re-collected and passed), for the institutions' data officers and the supervision dashboard.
with problems as (
    select * from {{ ref('stg_dq__problems') }}
),

organizations as (
    select * from {{ ref('dim_organization') }}
),

dimensions as (
    select dimension, dimension_zh from {{ source('dq', 'dimension') }}
)

select
    problems.problem_id,
    problems.rule_id,
    problems.description_zh as rule_zh,
    problems.dimension,
    dimensions.dimension_zh,
    problems.dataset,
    problems.org_code,
    organizations.org_name,
    organizations.org_type,
    problems.source_system,
    problems.source_table,
    problems.business_key,
    {{ mask_personal_text('problems.business_key') }} as business_key_masked,
    problems.business_date,
    problems.value,
    {{ mask_personal_text('problems.value') }} as value_masked,
    problems.status,
    case problems.status when 'open' then '待整改' else '已整改' end as status_zh,
    problems.first_seen_at,
    problems.last_seen_at,
    problems.closed_at,
    problems.times_reopened
from problems
left join organizations using (org_code)
left join dimensions using (dimension)
