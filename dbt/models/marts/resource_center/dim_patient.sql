-- 患者主索引（黄金记录）: one row per master id. Survivorship for now: the most recently updated
-- source record with a valid ID number wins, then the most recent record.
with persons as (
    select * from {{ ref('stg_ods__person') }}
),

ranked as (
    select
        persons.*,
        row_number() over (
            partition by master_id
            order by id_number_valid desc, source_updated_at desc, person_key
        ) as survivorship_rank,
        count(*) over (partition by master_id) as source_record_count
    from persons
),

final as (
    select
        master_id::text as master_id,
        name::text as name,
        sex_code::text as sex_code,
        birth_date::date as birth_date,
        id_number::text as id_number,
        id_number_valid::boolean as id_number_valid,
        phone::text as phone,
        address::text as address,
        source_record_count::integer as source_record_count,
        source_updated_at::timestamptz as last_updated_at
    from ranked
    where survivorship_rank = 1
)

select * from final
