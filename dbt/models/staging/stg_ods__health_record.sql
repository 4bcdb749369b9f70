with source as (
    select * from {{ source('ods', 'health_record') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || health_record_no as health_record_key,
        source_system,
        health_record_no,
        org_code,
        -- attributes
        name,
        sex_code,
        id_number,
        phone,
        address,
        township,
        village,
        responsible_doctor,
        status,
        -- dates
        birth_date,
        filed_at,
        source_updated_at,
        -- lineage
        source_table,
        source_key,
        source_position,
        dq_flags
    from source
),

final as (
    select * from renamed
)

select * from final
