-- 医保结算事实: one row per settlement of the 医保 platform's daily file (县内 and 县外, 门诊/急诊/住院).
-- org_code: the 医保定点编码 (H…) through the platform's own 定点 catalogue in ods.organization (crosswalk to the
-- county code by institution name, concept map `organization`), else an exact name match to dim_organization; an
-- out-of-county hospital has none and keeps its name in out_of_county_hospital.
-- master_id: by ID number, as in fct_referral (EMPI golden record first, else source patient records whose ID
-- number leads to exactly one master id); no ID number = unresolved.
-- 冲销: a reversal is its own row with negative amounts. Both rows stay (sums net out); the reversal and the
-- settlement it reverses (same person, institution, kind, negated total, settled before it) are flagged, and
-- is_counted leaves both out of settlement counts.
with settlements as (
    select
        *,
        case length(trim(id_number))
            when 18 then upper(substr(trim(id_number), 1, 17))
            when 15 then substr(trim(id_number), 1, 6) || '19' || substr(trim(id_number), 7, 9)
        end as id_stem
    from {{ ref('stg_ods__insurance_settlement') }}
),

institutions as (
    select org_code, org_name from {{ ref('dim_organization') }}
),

catalogue as (
    -- the settlement source's own 定点 catalogue: organization_id = 医保定点编码
    select distinct on (source_system, organization_id)
        source_system, organization_id, organization_code
    from {{ ref('stg_ods__organization') }}
    where organization_code is not null
    order by source_system, organization_id, source_updated_at desc nulls last
),

-- ID numbers are compared on their 17-character stem (a 15-digit legacy number upgraded as GB 11643 does), so a
-- mistyped check character still finds the resident; a stem shared by two master ids resolves nothing.
golden_ids as (
    select id_stem, min(master_id) as master_id
    from (
        select
            master_id,
            case length(trim(id_number))
                when 18 then upper(substr(trim(id_number), 1, 17))
                when 15 then substr(trim(id_number), 1, 6) || '19' || substr(trim(id_number), 7, 9)
            end as id_stem
        from {{ ref('stg_ods__empi_golden') }}
    ) as golden
    where id_stem is not null
    group by id_stem
    having count(distinct master_id) = 1
),

person_ids as (
    select id_stem, min(master_id) as master_id
    from (
        select
            master_id,
            case length(trim(id_number))
                when 18 then upper(substr(trim(id_number), 1, 17))
                when 15 then substr(trim(id_number), 1, 6) || '19' || substr(trim(id_number), 7, 9)
            end as id_stem
        from {{ ref('stg_ods__person') }}
        where master_id is not null
    ) as persons
    where id_stem is not null
    group by id_stem
    having count(distinct master_id) = 1
),

resolved as (
    select
        settlements.*,
        coalesce(by_code.org_code, by_name.org_code) as county_org_code,
        coalesce(golden_ids.master_id, person_ids.master_id) as resolved_master_id,
        coalesce(settlements.total_amount < 0 or settlements.fund_paid < 0, false) as reversal,
        coalesce(nullif(upper(trim(settlements.id_number)), ''), settlements.patient_name) as payer_key
    from settlements
    left join catalogue
        on catalogue.source_system = settlements.source_system
        and catalogue.organization_id = settlements.medical_org_code
    left join institutions as by_code on by_code.org_code = catalogue.organization_code
    left join institutions as by_name on by_name.org_name = trim(settlements.medical_org_name)
    left join golden_ids on golden_ids.id_stem = settlements.id_stem
    left join person_ids on person_ids.id_stem = settlements.id_stem
),

reversal_pairs as (
    -- the settlement each reversal cancels: the latest earlier one of the same person, institution and kind with
    -- the negated total
    select distinct on (reversals.insurance_settlement_key)
        originals.insurance_settlement_key as reversed_settlement_key
    from resolved as reversals
    inner join resolved as originals
        on originals.source_system = reversals.source_system
        and originals.payer_key = reversals.payer_key
        and originals.medical_org_code is not distinct from reversals.medical_org_code
        and originals.encounter_kind is not distinct from reversals.encounter_kind
        and originals.total_amount = -reversals.total_amount
        and originals.settled_at <= reversals.settled_at
        and not originals.reversal
    where reversals.reversal
    order by reversals.insurance_settlement_key, originals.settled_at desc
),

reversed as (
    select distinct reversed_settlement_key from reversal_pairs
),

final as (
    select
        resolved.insurance_settlement_key::text as settlement_key,
        resolved.source_system::text as source_system,
        resolved.settlement_id::text as settlement_id,
        resolved.resolved_master_id::text as master_id,
        -- a settlement the file calls 县外 is never attributed to a county institution
        case when not coalesce(resolved.is_out_of_county, false) then resolved.county_org_code end::text as org_code,
        resolved.medical_org_code::text as medical_org_code,
        case when coalesce(resolved.is_out_of_county, resolved.county_org_code is null)
            then resolved.medical_org_name end::text as out_of_county_hospital,
        coalesce(resolved.is_out_of_county, resolved.county_org_code is null)::boolean as is_out_of_county,
        -- 医疗类别: 住院 → inpatient; 门诊, 急诊 (and other ambulatory kinds) → outpatient
        case
            when resolved.encounter_kind ~ '住院' then 'inpatient'
            when resolved.encounter_kind is not null then 'outpatient'
        end::text as encounter_kind,
        resolved.encounter_kind::text as medical_category,
        resolved.insurance_type::text as insurance_type,
        resolved.diagnosis_code::text as diagnosis_code,
        (resolved.admitted_at at time zone 'Asia/Shanghai')::date as admitted_date,
        (resolved.discharged_at at time zone 'Asia/Shanghai')::date as discharged_date,
        resolved.settled_at::timestamptz as settled_at,
        (resolved.settled_at at time zone 'Asia/Shanghai')::date as settled_date,
        resolved.total_amount::numeric as total_amount,
        resolved.fund_paid::numeric as fund_paid,
        resolved.self_paid::numeric as self_paid,
        resolved.reversal::boolean as is_reversal,
        (reversed.reversed_settlement_key is not null)::boolean as is_reversed,
        (not resolved.reversal and reversed.reversed_settlement_key is null)::boolean as is_counted
    from resolved
    left join reversed on reversed.reversed_settlement_key = resolved.insurance_settlement_key
)

select * from final
