-- 门急诊人次（日）= 门诊人次 + 急诊人次, per institution and visit date.
-- 门诊人次 = counted visits with 就诊类型 100; 急诊人次 = counted visits with 就诊类型 200. Each visit counts once;
-- cancelled visits and duplicate saves are not counted (fct_encounter.is_counted), inpatient stays (300) are not
-- 门急诊. Every institution (all but the 卫生健康行政部门) has a row for every day the data covers, 0 where
-- nothing happened, so a silent institution shows as 0 instead of missing.
with encounters as (
    select * from {{ ref('fct_encounter') }}
    where is_counted
),

institutions as (
    select org_code, org_name, org_level from {{ ref('dim_organization') }}
    where org_type <> '卫生健康行政部门'
),

bounds as (
    select min(visit_date) as first_day, max(visit_date) as last_day from encounters
),

days as (
    select day::date as visit_date
    from bounds, generate_series(bounds.first_day, bounds.last_day, interval '1 day') as day
),

aggregated as (
    select
        visit_date,
        org_code,
        count(*) filter (where encounter_class_code = '100') as outpatient_visits,
        count(*) filter (where encounter_class_code = '200') as emergency_visits
    from encounters
    where encounter_class_code in ('100', '200')
    group by visit_date, org_code
),

final as (
    select
        days.visit_date::date as visit_date,
        institutions.org_code::text as org_code,
        institutions.org_name::text as org_name,
        institutions.org_level::text as org_level,
        coalesce(aggregated.outpatient_visits, 0)::integer as outpatient_visits,
        coalesce(aggregated.emergency_visits, 0)::integer as emergency_visits,
        (coalesce(aggregated.outpatient_visits, 0) + coalesce(aggregated.emergency_visits, 0))::integer as total_visits
    from institutions
    cross join days
    left join aggregated
        on aggregated.org_code = institutions.org_code
        and aggregated.visit_date = days.visit_date
)

select * from final
