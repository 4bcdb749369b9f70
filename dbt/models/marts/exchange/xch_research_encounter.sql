-- 科研数据集（就诊）: one row per counted visit or stay, with what research needs and no direct identity: the
-- resident as master id (the export replaces it with a keyed pseudonym per receiver), birth date (the export keeps
-- the year), sex and township of residence (the quasi-identifiers the export checks for k-anonymity), the
-- institution's type, never the member system's own visit or patient number.
with encounters as (
    select * from {{ ref('fct_encounter') }}
    where is_counted and master_id is not null
),

residents as (
    select master_id, sex_code, birth_date, township from {{ ref('dim_resident') }}
),

organizations as (
    select org_code, org_type, org_level from {{ ref('dim_organization') }}
),

final as (
    select
        encounters.visit_date::date as visit_date,
        encounters.master_id::text as master_id,
        residents.birth_date::date as birth_date,
        residents.sex_code::text as sex_code,
        coalesce(residents.township, '未知')::text as township,
        organizations.org_type::text as org_type,
        organizations.org_level::text as org_level,
        encounters.encounter_class_code::text as encounter_class_code,
        encounters.primary_diagnosis_code::text as primary_diagnosis_code,
        encounters.is_tcm::boolean as is_tcm,
        encounters.payment_category_code::text as payment_category_code,
        encounters.bed_days::integer as bed_days,
        encounters.total_fee::numeric as total_fee,
        encounters.drug_fee::numeric as drug_fee,
        encounters.is_died::boolean as is_died,
        encounters.encounter_key::text as encounter_key
    from encounters
    join residents on residents.master_id = encounters.master_id
    left join organizations on organizations.org_code = encounters.org_code
)

select * from final
