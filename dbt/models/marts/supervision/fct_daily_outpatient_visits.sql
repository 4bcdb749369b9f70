-- 门急诊人次（日）= 门诊人次 + 急诊人次, per institution and visit date.
-- 门诊人次 = visits with 就诊类型 100; 急诊人次 = visits with 就诊类型 200. Each visit counts once.
-- int_encounters__joined_to_persons holds every encounter, inpatient stays (就诊类型 300) included, so the
-- 门急诊 filter belongs here, in the measure's definition, not in the shared intermediate model.
with encounters as (
    select * from {{ ref('int_encounters__joined_to_persons') }}
    where encounter_class_code in ('100', '200')
),

aggregated as (
    select
        visit_date,
        org_code,
        max(org_name) as org_name,
        max(org_level) as org_level,
        count(*) filter (where encounter_class_code = '100') as outpatient_visits,
        count(*) filter (where encounter_class_code = '200') as emergency_visits,
        count(*) as total_visits
    from encounters
    group by visit_date, org_code
),

final as (
    select
        visit_date::date as visit_date,
        org_code::text as org_code,
        org_name::text as org_name,
        org_level::text as org_level,
        outpatient_visits::integer as outpatient_visits,
        emergency_visits::integer as emergency_visits,
        total_visits::integer as total_visits
    from aggregated
)

select * from final
