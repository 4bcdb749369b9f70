-- 稽核条目: rule × institution × dataset × source × day, with the rule's dimension and the pass rate.
with items as (
    select * from {{ ref('stg_dq__audit_items') }}
),

rules as (
    select * from {{ ref('stg_dq__rules') }}
),

organizations as (
    select * from {{ ref('dim_organization') }}
)

select
    items.rule_id,
    rules.description_zh as rule_zh,
    rules.dimension,
    rules.dimension_zh,
    rules.severity,
    items.dataset,
    items.org_code,
    organizations.org_name,
    organizations.org_type,
    items.source_system,
    items.business_date,
    items.checked_rows,
    items.failed_rows,
    items.coefficient,
    round(100.0 * (items.checked_rows - items.failed_rows) / nullif(items.checked_rows, 0), 2) as pass_rate
from items
join rules using (rule_id)
left join organizations using (org_code)
