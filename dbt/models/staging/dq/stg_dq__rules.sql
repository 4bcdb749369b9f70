with source as (
    select * from {{ source('dq', 'rule') }}
),

dimensions as (
    select * from {{ source('dq', 'dimension') }}
)

select
    source.rule_id,
    source.dataset,
    source.dimension,
    dimensions.dimension_zh,
    source.severity,
    source.description_zh,
    source.kind,
    source.origin,
    source.coefficient
from source
left join dimensions using (dimension)
