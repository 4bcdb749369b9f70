select
    scheme_id,
    scheme_version,
    org_code,
    dataset,
    dimension,
    period_type,
    period_start,
    score,
    checked_rows,
    failed_rows
from {{ source('dq', 'score') }}
