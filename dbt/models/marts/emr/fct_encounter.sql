{{ config(**per_encounter_incremental(post_hook=[
    "create index if not exists fct_encounter_duplicate_group on {{ this }} (org_code, (coalesce(master_id, person_key)))",
])) }}
-- depends_on: {{ ref('int_encounters__changed') }}
-- 就诊事实: one row per encounter (门诊 100, 急诊 200, 住院 300) of every member system, with the resident's master
-- id, TCM flag, inpatient dates and outcome, the visit's fees, and the flags every indicator filters on:
-- is_counted = not cancelled and not a duplicate save (int_encounters__deduplicated). Nothing is dropped.
-- Calendar dates are Beijing dates (the county's systems all run on Beijing time).
-- Incremental (macros/incremental.sql): a build replaces the encounters int_encounters__changed names — those
-- the publishes since the last build touched, directly or through their fees, facts or person, and the rest of
-- their duplicate groups — so a corrected or deleted encounter of a published month changes it.
with encounters as (
    {{ deduplicate_encounters(in_rebuilt('int_encounters__changed')) }}
),

diagnoses as (
    select * from {{ ref('stg_ods__diagnosis') }}
    where {{ in_rebuilt('int_encounters__changed') }}
),

tcm_encounters as (
    -- a 中医 diagnosis: a GB/T 15657 病名 or 证候 code on any diagnosis row of the encounter
    select distinct encounter_key
    from diagnoses
    where tcm_disease_code is not null or tcm_syndrome_code is not null
),

diagnosis_rows_primary as (
    -- fallback when the encounter row has no main diagnosis: its primary diagnosis row, 出院 before 入院 before 门诊
    select distinct on (encounter_key)
        encounter_key,
        diagnosis_code
    from diagnoses
    where is_primary and diagnosis_code is not null
    order by encounter_key,
        case diagnosis_kind when '出院' then 1 when '入院' then 2 else 3 end,
        diagnosed_at desc nulls last
),

fees as (
    -- 退费: rows flagged is_refunded are left out; zyy_his books a refund as its own negative row (not flagged),
    -- which nets out the original in the sum
    select
        encounter_key,
        count(*) as fee_rows,
        coalesce(sum(amount) filter (where not coalesce(is_refunded, false)), 0) as total_fee,
        -- 药品 = 西药费 13, 中成药费 14, 中草药费 15 (config/terminology/code_systems/fee_category.csv)
        coalesce(sum(amount) filter (
            where not coalesce(is_refunded, false) and fee_category_code in ('13', '14', '15')), 0) as drug_fee
    from {{ ref('stg_ods__fee') }}
    where {{ in_rebuilt('int_encounters__changed') }}
    group by encounter_key
),

enriched as (
    select
        encounters.*,
        coalesce(encounters.primary_diagnosis_code, diagnosis_rows_primary.diagnosis_code)
            as main_diagnosis_code,
        tcm_encounters.encounter_key is not null
            or coalesce(encounters.department_name ~ '中医|针灸|推拿|骨伤', false) as is_tcm_encounter,
        (coalesce(encounters.admitted_at, encounters.visit_at) at time zone 'Asia/Shanghai')::date as admission_date,
        case when encounters.encounter_class_code = '300'
            then (encounters.discharged_at at time zone 'Asia/Shanghai')::date end as discharge_day,
        fees.fee_rows,
        fees.total_fee,
        fees.drug_fee
    from encounters
    left join tcm_encounters on tcm_encounters.encounter_key = encounters.encounter_key
    left join diagnosis_rows_primary on diagnosis_rows_primary.encounter_key = encounters.encounter_key
    left join fees on fees.encounter_key = encounters.encounter_key
),

final as (
    select
        encounter_key::text as encounter_key,
        source_system::text as source_system,
        encounter_id::text as encounter_id,
        org_code::text as org_code,
        person_key::text as person_key,
        master_id::text as master_id,
        encounter_class_code::text as encounter_class_code,
        visit_at::timestamptz as visit_at,
        coalesce(visit_date, (visit_at at time zone 'Asia/Shanghai')::date)::date as visit_date,
        department_code::text as department_code,
        department_name::text as department_name,
        doctor_name::text as doctor_name,
        main_diagnosis_code::text as primary_diagnosis_code,
        primary_diagnosis_name::text as primary_diagnosis_name,
        is_tcm_encounter::boolean as is_tcm,
        payment_category_code::text as payment_category_code,
        is_first_visit::boolean as is_first_visit,
        status::text as status,
        -- 入院时间; visit_at is the admission time of an inpatient encounter when the source has no separate one
        case when encounter_class_code = '300' then coalesce(admitted_at, visit_at) end::timestamptz as admitted_at,
        case when encounter_class_code = '300' then admission_date end::date as admission_date,
        case when encounter_class_code = '300' then discharged_at end::timestamptz as discharged_at,
        discharge_day::date as discharge_date,
        -- 实际占用床日: discharge date - admission date, a same-day stay counts 1 (discharged stays only)
        case when discharge_day is not null then greatest(discharge_day - admission_date, 1) end::integer as bed_days,
        discharge_outcome_code::text as discharge_outcome_code,
        -- 离院方式/出院情况 4 = 死亡 (every mapping emits 1 治愈 2 好转 3 未愈 4 死亡 9 其他)
        coalesce(discharge_outcome_code = '4', false)::boolean as is_died,
        coalesce(fee_rows, 0)::integer as fee_rows,
        total_fee::numeric as total_fee,
        drug_fee::numeric as drug_fee,
        is_cancelled::boolean as is_cancelled,
        is_duplicate_save::boolean as is_duplicate_save,
        duplicate_of_encounter_key::text as duplicate_of_encounter_key,
        is_counted::boolean as is_counted
    from enriched
)

select * from final
