select
    problem_id,
    rule_id,
    dataset,
    dimension,
    org_code,
    source_system,
    source_table,
    business_key,
    business_date,
    value,
    description_zh,
    status,
    first_seen_at,
    last_seen_at,
    closed_at,
    times_reopened
from {{ source('dq', 'problem') }}
