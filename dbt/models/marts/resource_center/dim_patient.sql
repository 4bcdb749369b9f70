-- 患者主索引（黄金记录）: one row per master id, as the EMPI's survivorship rules chose it
-- (config/empi.yaml: a validated ID number first, then the most trusted source, then the most recent record).
with golden as (
    select * from {{ ref('stg_ods__empi_golden') }}
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
        last_updated_at::timestamptz as last_updated_at
    from golden
)

select * from final
