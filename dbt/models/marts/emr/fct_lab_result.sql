{{ config(**per_encounter_incremental()) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 检验结果事实: one row per lab result of every source, with the encounter it belongs to. All rows are kept;
-- is_counted says whether that encounter is a counted visit.
-- Incremental (macros/incremental.sql): a build replaces the rows of the encounters int_encounters__changed names.
with lab_results as (
    select * from {{ ref('stg_ods__lab_result') }}
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
        lab_results.lab_result_key::text as lab_result_key,
        lab_results.encounter_key::text as encounter_key,
        lab_results.source_system::text as source_system,
        lab_results.lab_order_id::text as lab_order_id,
        coalesce(encounters.org_code, lab_results.org_code)::text as org_code,
        coalesce(encounters.master_id, persons.master_id)::text as master_id,
        encounters.encounter_class_code::text as encounter_class_code,
        lab_results.item_code::text as item_code,
        lab_results.item_source_code::text as item_source_code,
        lab_results.item_name::text as item_name,
        lab_results.result_value::text as result_value,
        lab_results.numeric_value::double precision as numeric_value,
        lab_results.unit::text as unit,
        lab_results.reference_range::text as reference_range,
        lab_results.abnormal_flag::text as abnormal_flag,
        coalesce(lab_results.abnormal_flag in ('H', 'L'), false)::boolean as is_abnormal,
        lab_results.specimen::text as specimen,
        lab_results.reported_at::timestamptz as reported_at,
        coalesce((lab_results.reported_at at time zone 'Asia/Shanghai')::date, encounters.visit_date)::date
            as reported_date,
        (encounters.encounter_key is not null)::boolean as has_encounter,
        coalesce(encounters.is_counted, false)::boolean as is_counted
    from lab_results
    left join encounters on encounters.encounter_key = lab_results.encounter_key
    left join persons on persons.person_key = lab_results.person_key
)

select * from final
