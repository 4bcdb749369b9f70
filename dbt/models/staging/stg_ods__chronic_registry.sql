with source as (
    select * from {{ source('ods', 'chronic_registry') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || registry_id as chronic_registry_key,
        source_system || '|' || health_record_no as health_record_key,
        source_system,
        registry_id,
        health_record_no,
        org_code,
        -- attributes
        disease,
        diagnosis_code,
        managing_doctor,
        status,
        -- dates
        registered_at,
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
