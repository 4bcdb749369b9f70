-- 各机构每日服务量: 门急诊人次 (as fct_daily_outpatient_visits), 入院人数 and 出院人数 per institution and day.
-- 入院人数 = counted inpatient stays (就诊类型 300) admitted that day; 出院人数 = counted stays discharged that day.
-- Every institution × every day the data covers (the grid of fct_daily_outpatient_visits), 0 where nothing
-- happened: the daily upstream feed lists every institution, so a silent one reads 0 instead of "not reported".
with visits as (
    select * from {{ ref('fct_daily_outpatient_visits') }}
),

stays as (
    select * from {{ ref('fct_encounter') }}
    where is_counted and encounter_class_code = '300'
),

admissions as (
    select org_code, admission_date as service_date, count(*) as admissions
    from stays where admission_date is not null
    group by 1, 2
),

discharges as (
    select org_code, discharge_date as service_date, count(*) as discharges
    from stays where discharge_date is not null
    group by 1, 2
),

organizations as (
    select org_code, township from {{ ref('dim_organization') }}
),

final as (
    select
        visits.visit_date::date as service_date,
        visits.org_code::text as org_code,
        visits.org_name::text as org_name,
        visits.org_level::text as org_level,
        organizations.township::text as township,
        visits.outpatient_visits::integer as outpatient_visits,
        visits.emergency_visits::integer as emergency_visits,
        visits.total_visits::integer as total_visits,
        coalesce(admissions.admissions, 0)::integer as admissions,
        coalesce(discharges.discharges, 0)::integer as discharges
    from visits
    left join organizations on organizations.org_code = visits.org_code
    left join admissions
        on admissions.org_code = visits.org_code and admissions.service_date = visits.visit_date
    left join discharges
        on discharges.org_code = visits.org_code and discharges.service_date = visits.visit_date
)

select * from final
