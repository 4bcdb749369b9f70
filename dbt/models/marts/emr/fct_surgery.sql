{{ config(**per_encounter_incremental()) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 手术事实: one row per surgery/operation record. Surgeries of an encounter that is not counted (a 作废 admission
-- keeps its rows in rmyy_his/zyy_his) are left out; a surgery whose encounter has not arrived yet is kept with the
-- institution and patient of its own row.
-- 切口愈合等级 (甲/乙/丙/其他) is mapped from rmyy_his YHDJ, zyy_his heal_grade and cloud_his heal_level; the private
-- hospitals' order API has none. 手术级别 is recorded by no member system today, so surgery_level stays empty.
-- Incremental (macros/incremental.sql): a build replaces the rows of the encounters int_encounters__changed names.
with surgeries as (
    select * from {{ ref('stg_ods__surgery') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

encounters as (
    select encounter_key, org_code, master_id, encounter_class_code, visit_date, admission_date, is_counted
    from {{ ref('fct_encounter') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

joined as (
    select
        surgeries.*,
        encounters.encounter_key is not null as has_encounter,
        encounters.org_code as encounter_org_code,
        coalesce(encounters.master_id, persons.master_id) as resident_master_id,
        encounters.encounter_class_code,
        -- a surgery order without its own time (private_api): the stay's admission date, else the visit date
        coalesce(
            (coalesce(surgeries.started_at, surgeries.ended_at) at time zone 'Asia/Shanghai')::date,
            encounters.admission_date,
            encounters.visit_date
        ) as surgery_day
    from surgeries
    left join encounters on encounters.encounter_key = surgeries.encounter_key
    left join persons on persons.person_key = surgeries.person_key
    where coalesce(encounters.is_counted, true)
),

final as (
    select
        surgery_key::text as surgery_key,
        encounter_key::text as encounter_key,
        source_system::text as source_system,
        coalesce(encounter_org_code, org_code)::text as org_code,
        resident_master_id::text as master_id,
        encounter_class_code::text as encounter_class_code,
        procedure_code::text as procedure_code,
        procedure_source_code::text as procedure_source_code,
        procedure_name::text as procedure_name,
        started_at::timestamptz as started_at,
        ended_at::timestamptz as ended_at,
        surgery_day::date as surgery_date,
        nullif(trim(surgery_level), '')::text as surgery_level,
        incision_class_code::text as incision_class_code,
        healing_grade_code::text as healing_grade,
        anaesthesia::text as anaesthesia,
        surgeon_name::text as surgeon_name,
        has_encounter::boolean as has_encounter
    from joined
)

select * from final
