-- 居民健康档案 with the resident's master id. The 公卫 system's person rows are its 个人基本信息表 itself
-- (local_patient_id = 健康档案编号), so a record's person_key is 'public_health|<健康档案编号>' and its master id
-- comes from the EMPI through that row. A voided record has no person row any more (作废 is withdrawn from person):
-- it falls back to its ID number (int_residents__id_numbers).
with records as (
    select * from {{ ref('stg_ods__health_record') }}
),

persons as (
    select person_key, master_id, registered_at from {{ ref('stg_ods__person') }}
),

id_numbers as (
    select * from {{ ref('int_residents__id_numbers') }}
),

joined as (
    select
        records.health_record_key,
        records.source_system,
        records.health_record_no,
        coalesce(persons.master_id, id_numbers.master_id) as master_id,
        case
            when persons.master_id is not null then 'person'
            when id_numbers.master_id is not null then 'id_number'
        end as master_id_via,
        records.org_code,
        records.township,
        records.village,
        records.responsible_doctor,
        records.sex_code,
        records.birth_date,
        records.filed_at as filed_date,
        -- 录入时间 of the 个人基本信息表 row (cjsj); 建档日期 (jdrq) is the business date
        persons.registered_at as filed_at,
        records.status,
        -- 在档 only: 非活动 and 作废 records are not counted as 在册档案
        coalesce(records.status = '在档', false) as is_active,
        records.source_updated_at
    from records
    left join persons on persons.person_key = records.health_record_key
    left join id_numbers
        on id_numbers.id17 = {{ id17('records.id_number') }}
),

final as (
    select * from joined
)

select * from final
