-- Each visit with the resident's master id and the institution it happened at (from dim_organization, the
-- county registry: see its description for why not ods.organization).
with encounters as (
    select * from {{ ref('stg_ods__encounter') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

institutions as (
    select org_code, org_name, org_level, org_type, township, is_primary_care, is_hospital
    from {{ ref('dim_organization') }}
),

joined as (
    select
        encounters.*,
        persons.master_id,
        institutions.org_name,
        institutions.org_level,
        institutions.org_type,
        institutions.township,
        institutions.is_primary_care,
        institutions.is_hospital
    from encounters
    left join persons on persons.person_key = encounters.person_key
    left join institutions on institutions.org_code = encounters.org_code
),

final as (
    select * from joined
)

select * from final
