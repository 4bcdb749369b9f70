-- 签约居民的门急诊就诊: each counted outpatient/emergency visit of a resident holding a family-doctor contract
-- valid on the visit day, with whether it happened at the contracted institution (or one of its village
-- clinics) and with the contracted doctor. Numerators and denominator of 签约居民定点机构就诊率 / 签约医生就诊率.
with visits as (
    select * from {{ ref('fct_encounter') }}
    where is_counted and encounter_class_code in ('100', '200') and master_id is not null
),

contracts as (
    select * from {{ ref('fct_family_doctor_contract') }}
    where status_is_valid and master_id is not null
),

institutions as (
    select org_code, parent_org_code from {{ ref('dim_organization') }}
),

matched as (
    select
        visits.encounter_key,
        visits.org_code,
        visits.visit_date,
        -- a resident with two overlapping contracts: the visit counts once, matched to any of them
        bool_or(visits.org_code = contracts.org_code or institutions.parent_org_code = contracts.org_code)
            as at_contracted_org,
        bool_or(visits.doctor_name = contracts.doctor_name) as with_contracted_doctor
    from visits
    inner join contracts
        on contracts.master_id = visits.master_id
        and visits.visit_date >= contracts.valid_from
        and (contracts.valid_to is null or visits.visit_date <= contracts.valid_to)
    left join institutions on institutions.org_code = visits.org_code
    group by visits.encounter_key, visits.org_code, visits.visit_date
),

final as (
    select
        encounter_key,
        org_code,
        visit_date,
        coalesce(at_contracted_org, false) as at_contracted_org,
        coalesce(with_contracted_doctor, false) as with_contracted_doctor
    from matched
)

select * from final
