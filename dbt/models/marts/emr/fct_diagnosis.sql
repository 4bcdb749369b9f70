{{ config(**per_encounter_incremental()) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 诊断事实: the diagnosis rows of counted encounters only. Diagnoses of cancelled encounters, of duplicate saves
-- and of encounters not in silver (e.g. cloud_his keeps the diagnoses of a quarantined duplicate visit) are left
-- out, so a count over this model is a count over real visits.
-- Incremental (macros/incremental.sql): a build replaces the rows of the encounters int_encounters__changed names.
with diagnoses as (
    select * from {{ ref('stg_ods__diagnosis') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

encounters as (
    select encounter_key, org_code, master_id, encounter_class_code, visit_date
    from {{ ref('fct_encounter') }}
    where is_counted and {{ in_rebuilt('int_encounters__changed') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

joined as (
    select
        diagnoses.*,
        encounters.org_code as encounter_org_code,
        coalesce(encounters.master_id, persons.master_id) as resident_master_id,
        encounters.encounter_class_code,
        encounters.visit_date
    from diagnoses
    inner join encounters on encounters.encounter_key = diagnoses.encounter_key
    left join persons on persons.person_key = diagnoses.person_key
),

final as (
    select
        diagnosis_key::text as diagnosis_key,
        encounter_key::text as encounter_key,
        source_system::text as source_system,
        coalesce(encounter_org_code, org_code)::text as org_code,
        resident_master_id::text as master_id,
        encounter_class_code::text as encounter_class_code,
        diagnosis_kind::text as diagnosis_kind,
        coalesce(is_primary, false)::boolean as is_primary,
        diagnosis_code::text as diagnosis_code,
        -- ICD-10 类目: the first three characters (J18.900x001 → J18); null for a diagnosis with no ICD-10 code
        substring(upper(diagnosis_code) from '^[A-Z][0-9]{2}')::text as icd_category,
        diagnosis_name::text as diagnosis_name,
        tcm_disease_code::text as tcm_disease_code,
        tcm_syndrome_code::text as tcm_syndrome_code,
        (tcm_disease_code is not null or tcm_syndrome_code is not null)::boolean as is_tcm,
        diagnosed_at::timestamptz as diagnosed_at,
        -- a source without its own diagnosis time: the visit's date
        coalesce((diagnosed_at at time zone 'Asia/Shanghai')::date, visit_date)::date as diagnosed_date
    from joined
)

select * from final
