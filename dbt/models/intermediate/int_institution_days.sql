-- Every member institution × every day the data covers, with that day's resources: open beds and staff from the
-- institution's resource month (fct_resource_month). The denominator side of bed and workload indicators:
-- 实际开放总床日数 = Σ open beds per day, 平均医师人数 × 工作日数 = Σ physicians per working day.
with periods as (
    select min(period_start) as first_day, max(period_end) as last_day
    from {{ ref('int_indicator_periods') }}
    where period_type = 'month'
),

institutions as (
    select org_code from {{ ref('dim_organization') }}
    where org_type <> '卫生健康行政部门'
),

resources as (
    select * from {{ ref('fct_resource_month') }}
),

days as (
    select day::date as day
    from periods, generate_series(periods.first_day, periods.last_day, interval '1 day') as day
),

final as (
    select
        institutions.org_code,
        days.day,
        -- 工作日: Monday to Friday (statutory holidays are not modelled yet)
        extract(isodow from days.day) < 6 as is_working_day,
        coalesce(resources.open_beds, 0) as open_beds,
        coalesce(resources.physicians, 0) as physicians,
        coalesce(resources.practitioners, 0) as practitioners,
        coalesce(resources.prescribing_gps, 0) as prescribing_gps
    from institutions
    cross join days
    left join resources
        on resources.org_code = institutions.org_code
        and resources.month = date_trunc('month', days.day)::date
)

select * from final
