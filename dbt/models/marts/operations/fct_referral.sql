-- 双向转诊事实: one row per referral form of the 医共体 referral platform.
-- direction: the platform's 转诊类型 (mapped up/down); a form whose type did not map gets it from the two
-- institutions (基层 → 医院 = up, 医院 → 基层 = down).
-- Status rules (the platform's 1 待接收 2 已接收 3 已完成 4 已拒收 5 已撤销, and the same words from a new source):
-- rejected = 拒收; withdrawn = 撤销/取消/作废; completed = the receiving institution took the patient in
-- (已接收 or 已完成, or a receive time on a form that is neither rejected nor withdrawn).
-- master_id: the form has no patient record id, only the typed ID number. It is resolved through the EMPI's
-- golden records (an ID number belongs to one master id), else through source patient records whose ID
-- number leads to exactly one master id; a form without an ID number or with an unknown one stays unresolved.
with referrals as (
    select
        *,
        case length(trim(id_number))
            when 18 then upper(substr(trim(id_number), 1, 17))
            when 15 then substr(trim(id_number), 1, 6) || '19' || substr(trim(id_number), 7, 9)
        end as id_stem
    from {{ ref('stg_ods__referral') }}
),

institutions as (
    select org_code, is_primary_care, is_hospital from {{ ref('dim_organization') }}
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

classified as (
    select
        referrals.*,
        coalesce(
            referrals.direction,
            case
                when from_org.is_primary_care and to_org.is_hospital then 'up'
                when from_org.is_hospital and to_org.is_primary_care then 'down'
            end
        ) as canonical_direction,
        coalesce(referrals.status ~ '拒', false) as rejected,
        coalesce(referrals.status ~* '撤销|取消|作废|cancel|withdraw', false) as withdrawn,
        coalesce(golden_ids.master_id, person_ids.master_id) as resolved_master_id
    from referrals
    left join institutions as from_org on from_org.org_code = referrals.from_organization_code
    left join institutions as to_org on to_org.org_code = referrals.to_organization_code
    left join golden_ids on golden_ids.id_stem = referrals.id_stem
    left join person_ids on person_ids.id_stem = referrals.id_stem
),

final as (
    select
        referral_key::text as referral_key,
        source_system::text as source_system,
        referral_id::text as referral_id,
        resolved_master_id::text as master_id,
        from_organization_code::text as from_org_code,
        to_organization_code::text as to_org_code,
        canonical_direction::text as direction,
        diagnosis_code::text as diagnosis_code,
        substring(upper(diagnosis_code) from '^[A-Z][0-9]{2}')::text as icd_category,
        diagnosis_name::text as diagnosis_name,
        reason::text as reason,
        requested_at::timestamptz as requested_at,
        (requested_at at time zone 'Asia/Shanghai')::date as request_date,
        received_at::timestamptz as received_at,
        (received_at at time zone 'Asia/Shanghai')::date as received_date,
        status::text as status,
        (not rejected and not withdrawn
            and (coalesce(status ~ '已接收|已完成|接诊|完成', false) or received_at is not null))::boolean as is_completed,
        rejected::boolean as is_rejected,
        withdrawn::boolean as is_withdrawn
    from classified
)

select * from final
