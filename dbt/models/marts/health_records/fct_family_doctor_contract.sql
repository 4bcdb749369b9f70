-- 家庭医生签约: one row per 签约 (voided ones included, with status_is_valid false), with the resident.
-- status_is_valid: the contract counts in its term valid_from … valid_to — 已签约, and 已到期 (it was valid during its
-- term; an as-of count on an earlier day must still see it). 已解约 (cancelled early) and 作废 never count: the
-- source's 解约日期 (jyrq) is not carried into silver, so when a cancelled contract stopped is unknown.
-- Person: the contract's 健康档案 (source_system|health_record_no) → master id, as fct_health_record.
with contracts as (
    select * from {{ ref('stg_ods__family_doctor_contract') }}
),

records as (
    select health_record_key, master_id, township from {{ ref('int_public_health__health_records') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

residents as (
    select master_id, township from {{ ref('dim_resident') }}
),

institutions as (
    select org_code, nullif(township, '') as township from {{ ref('organizations') }}
),

joined as (
    select
        contracts.*,
        coalesce(records.master_id, persons.master_id) as master_id,
        records.township as record_township
    from contracts
    left join records on records.health_record_key = contracts.health_record_key
    left join persons on persons.person_key = contracts.health_record_key
),

final as (
    select
        joined.family_doctor_contract_key::text as contract_key,
        joined.contract_id::text as contract_id,
        joined.master_id::text as master_id,
        joined.health_record_no::text as health_record_no,
        -- residence: the 健康档案's township, else the resident's, else the contracting institution's
        coalesce(joined.record_township, residents.township, institutions.township)::text as township,
        joined.org_code::text as org_code,
        joined.team_name::text as team_name,
        joined.doctor_name::text as doctor_name,
        joined.service_package::text as service_package,
        joined.signed_at::date as signed_date,
        joined.valid_from::date as valid_from,
        joined.valid_to::date as valid_to,
        joined.is_key_population::boolean as is_key_population,
        joined.status::text as status,
        coalesce(joined.status in ('已签约', '已到期'), false)::boolean as status_is_valid
    from joined
    left join residents on residents.master_id = joined.master_id
    left join institutions on institutions.org_code = joined.org_code
)

select * from final
