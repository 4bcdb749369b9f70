with source as (
    select * from {{ source('ods', 'empi_golden') }}
),

renamed as (
    select
        -- ids
        master_id,
        -- attributes
        name,
        sex_code,
        birth_date,
        id_number,
        id_number_valid,
        phone,
        address,
        record_count as source_record_count,
        -- dates
        last_updated_at
    from source
)

select * from renamed
