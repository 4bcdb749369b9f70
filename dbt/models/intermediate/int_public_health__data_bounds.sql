-- The business days the data covers: the first and the last day with any activity (visits, public-health services,
-- follow-ups, 建档, 签约, births) plus the 全员人口 register's months. The last day is "today" for every as-of rule
-- (健康档案使用率's 12 months, 签约 at month end, the current month's population). A date later than the moment
-- its row was last modified in the source cannot be real (a typo), so it is ignored here.
with activity as (
    select (visit_at at time zone 'Asia/Shanghai')::date as activity_date, source_updated_at
    from {{ ref('stg_ods__encounter') }}
    union all
    select service_date, source_updated_at from {{ ref('stg_ods__public_health_service') }}
    union all
    select followup_date, source_updated_at from {{ ref('stg_ods__chronic_followup') }}
    union all
    select filed_at, source_updated_at from {{ ref('stg_ods__health_record') }}
    union all
    select signed_at, source_updated_at from {{ ref('stg_ods__family_doctor_contract') }}
    union all
    select (born_at at time zone 'Asia/Shanghai')::date, source_updated_at from {{ ref('stg_ods__birth') }}
),

plausible as (
    select activity_date
    from activity
    where activity_date is not null
      and (source_updated_at is null or activity_date <= (source_updated_at at time zone 'Asia/Shanghai')::date)
),

register_months as (
    select
        min(to_date(register_month || '-01', 'YYYY-MM-DD')) as first_register_month,
        max(to_date(register_month || '-01', 'YYYY-MM-DD')) as last_register_month
    from {{ ref('stg_ods__population_register') }}
),

activity_bounds as (
    select min(activity_date) as first_day, max(activity_date) as last_day from plausible
),

final as (
    select
        activity_bounds.first_day as first_activity_day,
        activity_bounds.last_day as last_activity_day,
        register_months.first_register_month,
        register_months.last_register_month,
        -- the as-of day: the last day with activity; with none yet, the end of the newest register month
        coalesce(
            activity_bounds.last_day,
            (register_months.last_register_month + interval '1 month' - interval '1 day')::date
        ) as last_day,
        -- the month range every monthly mart covers: register months and activity months together
        date_trunc('month', least(activity_bounds.first_day, register_months.first_register_month))::date
            as first_month,
        date_trunc('month', greatest(activity_bounds.last_day, register_months.last_register_month))::date
            as last_month
    from activity_bounds
    cross join register_months
)

select * from final
