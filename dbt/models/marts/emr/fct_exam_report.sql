{{ config(**per_encounter_incremental()) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 检查报告事实: one row per exam report (imaging, ultrasound, ECG) of every source, with the encounter it belongs
-- to. All rows are kept; is_counted says whether that encounter is a counted visit.
-- Incremental (macros/incremental.sql): a build replaces the rows of the encounters int_encounters__changed names.
with reports as (
    select * from {{ ref('stg_ods__exam_report') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

encounters as (
    select encounter_key, org_code, master_id, encounter_class_code, visit_date, is_counted
    from {{ ref('fct_encounter') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

final as (
    select
        reports.exam_report_key::text as exam_report_key,
        reports.encounter_key::text as encounter_key,
        reports.source_system::text as source_system,
        coalesce(encounters.org_code, reports.org_code)::text as org_code,
        coalesce(encounters.master_id, persons.master_id)::text as master_id,
        encounters.encounter_class_code::text as encounter_class_code,
        reports.exam_class_code::text as exam_class_code,
        reports.exam_item_name::text as exam_item_name,
        reports.body_part::text as body_part,
        reports.findings::text as findings,
        reports.conclusion::text as conclusion,
        reports.reported_at::timestamptz as reported_at,
        coalesce((reports.reported_at at time zone 'Asia/Shanghai')::date, encounters.visit_date)::date
            as reported_date,
        (encounters.encounter_key is not null)::boolean as has_encounter,
        coalesce(encounters.is_counted, false)::boolean as is_counted
    from reports
    left join encounters on encounters.encounter_key = reports.encounter_key
    left join persons on persons.person_key = reports.person_key
)

select * from final
