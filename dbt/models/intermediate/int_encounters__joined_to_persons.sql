-- Each visit with the resident's master id and the institution it happened at.
with encounters as (
    select * from {{ ref('stg_ods__encounter') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

organizations as (
    select org_code, org_name, org_level, org_type from {{ ref('organizations') }}
),

joined as (
    select
        encounters.*,
        persons.master_id,
        organizations.org_name,
        organizations.org_level,
        organizations.org_type
    from encounters
    left join persons using (person_key)
    left join organizations using (org_code)
),

final as (
    select * from joined
)

select * from final
