-- 基本公卫服务: one row per public-health service event of a resident, every kind in one table:
--   filing             建档 (a 健康档案 not voided; date = 建档日期)
--   htn_followup / dm_followup   高血压 / 2型糖尿病 随访 (ods.chronic_followup)
--   elderly_check / child_check  老年人健康体检 / 0～6岁儿童健康检查
--   maternal_followup  孕期（产前）随访; postpartum_visit 产后访视; postpartum_42d_check 产后42天健康检查;
--   delivery           分娩 (the 妇幼 files record it as a 随访 row)
--   contract           家庭医生签约 (not voided; date = 签约日期)
-- Person resolution, first that answers: the service's own person record (source_system|local_patient_id), the
-- 健康档案 it names (source_system|health_record_no), its ID number (int_residents__id_numbers).
-- A service without a 健康档案编号 (the 妇幼 files) gets the resident's active record from dim_resident.
-- Township = the 健康档案's township, else the resident's (dim_resident): attribution by residence.
with services as (
    select * from {{ ref('stg_ods__public_health_service') }}
),

followups as (
    select * from {{ ref('stg_ods__chronic_followup') }}
),

contracts as (
    select * from {{ ref('stg_ods__family_doctor_contract') }}
    where status is distinct from '作废'
),

records as (
    select * from {{ ref('int_public_health__health_records') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

id_numbers as (
    select * from {{ ref('int_residents__id_numbers') }}
),

residents as (
    select master_id, birth_date, township, health_record_no from {{ ref('dim_resident') }}
),

service_events as (
    select
        'public_health_service|' || services.public_health_service_key as service_key,
        services.source_system,
        case
            when services.service_kind = 'maternal_followup' and services.result like '%产前%' then 'maternal_followup'
            when services.service_kind = 'maternal_followup' and services.result = '产后访视' then 'postpartum_visit'
            when services.service_kind = 'maternal_followup' and services.result like '产后42天%'
                then 'postpartum_42d_check'
            when services.service_kind = 'maternal_followup' and services.result = '分娩' then 'delivery'
            when services.service_kind = 'prenatal_visit' then 'maternal_followup'
            else services.service_kind
        end as service_kind,
        coalesce(persons.master_id, records.master_id, id_numbers.master_id) as master_id,
        services.health_record_no,
        services.org_code,
        services.service_date,
        services.systolic_bp,
        services.diastolic_bp,
        null::double precision as fasting_glucose,
        services.weight_kg,
        services.height_cm,
        services.gestational_weeks,
        services.result as service_result,
        services.doctor_name
    from services
    left join persons on persons.person_key = services.person_key
    left join records on records.health_record_key = services.health_record_key
    left join id_numbers
        on id_numbers.id17 = {{ id17('services.id_number') }}
),

followup_events as (
    select
        'chronic_followup|' || followups.chronic_followup_key as service_key,
        followups.source_system,
        case
            when followups.disease in ('hypertension', '高血压') then 'htn_followup'
            when followups.disease in ('diabetes', '2型糖尿病', '糖尿病') then 'dm_followup'
        end as service_kind,
        coalesce(records.master_id, persons.master_id) as master_id,
        followups.health_record_no,
        followups.org_code,
        followups.followup_date as service_date,
        followups.systolic_bp,
        followups.diastolic_bp,
        followups.fasting_glucose,
        null::double precision as weight_kg,
        null::double precision as height_cm,
        null::integer as gestational_weeks,
        followups.followup_method as service_result,
        followups.doctor_name
    from followups
    left join records on records.health_record_key = followups.health_record_key
    left join persons on persons.person_key = followups.health_record_key
),

filing_events as (
    select
        'health_record|' || records.health_record_key as service_key,
        records.source_system,
        'filing' as service_kind,
        records.master_id,
        records.health_record_no,
        records.org_code,
        records.filed_date as service_date,
        null::integer as systolic_bp,
        null::integer as diastolic_bp,
        null::double precision as fasting_glucose,
        null::double precision as weight_kg,
        null::double precision as height_cm,
        null::integer as gestational_weeks,
        records.status as service_result,
        records.responsible_doctor as doctor_name
    from records
    where records.status is distinct from '作废'
),

contract_events as (
    select
        'family_doctor_contract|' || contracts.family_doctor_contract_key as service_key,
        contracts.source_system,
        'contract' as service_kind,
        records.master_id,
        contracts.health_record_no,
        contracts.org_code,
        contracts.signed_at as service_date,
        null::integer as systolic_bp,
        null::integer as diastolic_bp,
        null::double precision as fasting_glucose,
        null::double precision as weight_kg,
        null::double precision as height_cm,
        null::integer as gestational_weeks,
        contracts.service_package as service_result,
        contracts.doctor_name
    from contracts
    left join records on records.health_record_key = contracts.health_record_key
),

events as (
    select * from service_events
    union all
    select * from followup_events
    union all
    select * from filing_events
    union all
    select * from contract_events
),

final as (
    select
        events.service_key::text as service_key,
        events.service_kind::text as service_kind,
        events.master_id::text as master_id,
        coalesce(events.health_record_no, residents.health_record_no)::text as health_record_no,
        events.org_code::text as org_code,
        coalesce(own_record.township, residents.township)::text as township,
        events.service_date::date as service_date,
        {{ completed_years('events.service_date', 'coalesce(residents.birth_date, own_record.birth_date)') }}
            as age_at_service,
        events.systolic_bp::integer as systolic_bp,
        events.diastolic_bp::integer as diastolic_bp,
        events.fasting_glucose::double precision as fasting_glucose,
        events.weight_kg::double precision as weight_kg,
        events.height_cm::double precision as height_cm,
        events.gestational_weeks::integer as gestational_weeks,
        events.service_result::text as service_result,
        events.doctor_name::text as doctor_name,
        events.source_system::text as source_system
    from events
    left join residents on residents.master_id = events.master_id
    -- the 健康档案 the service names, for its township (source_system|health_record_no)
    left join records as own_record
        on own_record.health_record_key = events.source_system || '|' || events.health_record_no
)

select * from final
