select
    rule_id,
    dataset,
    org_code,
    source_system,
    business_date,
    checked_rows,
    failed_rows,
    coefficient,
    run_id
from {{ source('dq', 'audit_item') }}
