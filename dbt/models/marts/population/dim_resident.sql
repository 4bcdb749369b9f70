-- 全员人口库: one row per resident known to the county — every EMPI master id plus every person of the 全员人口
-- register who has no EMPI record yet (provisional key, see int_residents__register_linked). No ID number, name,
-- phone or address here: the API serves those masked from dim_patient.
-- Demographics: the register (the civil record) first, then the EMPI golden record; township/village from the
-- register, else from the resident's 健康档案.
with golden as (
    select master_id, sex_code, birth_date from {{ ref('stg_ods__empi_golden') }}
),

register as (
    select * from {{ ref('int_residents__register_linked') }}
),

records as (
    select * from {{ ref('int_public_health__health_records') }}
    where master_id is not null
),

-- the resident's 健康档案: the active one; with duplicates (建档 twice) the earliest filed
resident_record as (
    select distinct on (master_id)
        master_id,
        health_record_no,
        township,
        village
    from records
    where is_active
    order by master_id, filed_date nulls last, health_record_no
),

record_counts as (
    select master_id, count(*) as active_health_records
    from records
    where is_active
    group by master_id
),

-- the day a resident died in hospital: an inpatient stay whose 离院方式/出院情况 is 4 死亡 (the same fact as the
-- quality rules' resident_death view, config/quality/views.yaml); deaths at home reach no collected system
deaths as (
    select master_id, min(discharged_at)::date as death_date
    from {{ ref('int_encounters__joined_to_persons') }}
    where discharge_outcome_code = '4' and discharged_at is not null and master_id is not null
    group by master_id
),

people as (
    select master_id from golden
    union
    select master_id from register
),

final as (
    select
        people.master_id::text as master_id,
        coalesce(register.sex_code, golden.sex_code)::text as sex_code,
        coalesce(register.birth_date, golden.birth_date)::date as birth_date,
        extract(year from coalesce(register.birth_date, golden.birth_date))::integer as birth_year,
        (case when register.master_id is not null then register.township else resident_record.township end)::text
            as township,
        (case when register.master_id is not null then register.village else resident_record.village end)::text
            as village,
        (case
            when register.master_id is not null then '全员人口库'
            when resident_record.township is not null then '健康档案'
        end)::text as township_source,
        register.household_no::text as household_no,
        register.residence_status::text as residence_status,
        register.register_month::date as last_register_month,
        -- 常住: listed in the newest monthly file (户籍 and 常住 alike: the file lists every resident living here)
        coalesce(register.is_listed_in_latest_file, false)::boolean as is_resident,
        -- the register drops the dead without saying why, 健康档案 has no 死亡 status and the chronic card's 死亡
        -- has no date: the one dated death a member system records is a death in hospital
        deaths.death_date::date as death_date,
        (deaths.death_date is null)::boolean as is_alive,
        -- the age bands of fct_population_month, in completed years today (or on the day of death)
        ({{ age_band('coalesce(deaths.death_date, current_date)',
                     'coalesce(register.birth_date, golden.birth_date)') }})::text as age_band,
        (resident_record.health_record_no is not null)::boolean as has_health_record,
        resident_record.health_record_no::text as health_record_no,
        coalesce(record_counts.active_health_records, 0)::integer as active_health_records,
        (golden.master_id is not null)::boolean as is_in_empi,
        register.link_method::text as register_link_method
    from people
    left join golden on golden.master_id = people.master_id
    left join register on register.master_id = people.master_id
    left join resident_record on resident_record.master_id = people.master_id
    left join record_counts on record_counts.master_id = people.master_id
    left join deaths on deaths.master_id = people.master_id
)

select * from final
