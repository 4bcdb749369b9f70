-- 机构数据质量评分: one row per institution × dataset × dimension × period, with the institution's rank among
-- institutions of its type on the total score (dataset '*' = all datasets, dimension '*' = total).
with scores as (
    select * from {{ ref('stg_dq__scores') }}
),

organizations as (
    select * from {{ ref('dim_organization') }}
),

dimensions as (
    select dimension, dimension_zh from {{ source('dq', 'dimension') }}
)

select
    scores.org_code,
    organizations.org_name,
    organizations.org_type,
    organizations.township,
    scores.dataset,
    scores.dimension,
    coalesce(dimensions.dimension_zh, '综合得分') as dimension_zh,
    scores.period_type,
    scores.period_start,
    scores.scheme_id,
    scores.scheme_version,
    scores.score,
    scores.checked_rows,
    scores.failed_rows,
    rank() over (
        partition by organizations.org_type, scores.dataset, scores.dimension, scores.period_type, scores.period_start
        order by scores.score desc
    )::integer as rank_in_type
from scores
left join organizations using (org_code)
left join dimensions using (dimension)
