{{ config(**per_encounter_incremental()) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 处方事实: one row per prescription (drug order) line of every source, with the encounter it belongs to.
-- All rows are kept; is_counted says whether that encounter is a counted visit (false when it is cancelled, a
-- duplicate save, or not in silver), so drug statistics filter on it like every other fact.
-- Incremental (macros/incremental.sql): a build replaces the rows of the encounters int_encounters__changed names.
with prescriptions as (
    select * from {{ ref('stg_ods__prescription') }}
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
        prescriptions.prescription_key::text as prescription_key,
        prescriptions.encounter_key::text as encounter_key,
        prescriptions.source_system::text as source_system,
        prescriptions.prescription_id::text as prescription_id,
        coalesce(encounters.org_code, prescriptions.org_code)::text as org_code,
        coalesce(encounters.master_id, persons.master_id)::text as master_id,
        encounters.encounter_class_code::text as encounter_class_code,
        prescriptions.drug_code::text as drug_code,
        prescriptions.drug_source_code::text as drug_source_code,
        prescriptions.drug_name::text as drug_name,
        prescriptions.atc_code::text as atc_code,
        prescriptions.drug_category::text as drug_category,
        prescriptions.specification::text as specification,
        prescriptions.quantity::numeric as quantity,
        prescriptions.unit::text as unit,
        prescriptions.unit_price::numeric as unit_price,
        prescriptions.amount::numeric as amount,
        prescriptions.frequency_code::text as frequency_code,
        prescriptions.prescribed_at::timestamptz as prescribed_at,
        coalesce((prescriptions.prescribed_at at time zone 'Asia/Shanghai')::date, encounters.visit_date)::date
            as prescribed_date,
        (encounters.encounter_key is not null)::boolean as has_encounter,
        coalesce(encounters.is_counted, false)::boolean as is_counted
    from prescriptions
    left join encounters on encounters.encounter_key = prescriptions.encounter_key
    left join persons on persons.person_key = prescriptions.person_key
)

select * from final
