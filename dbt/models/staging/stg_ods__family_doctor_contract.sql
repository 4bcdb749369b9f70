with source as (
    select * from {{ source('ods', 'family_doctor_contract') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || contract_id as family_doctor_contract_key,
        source_system || '|' || health_record_no as health_record_key,
        source_system,
        contract_id,
        health_record_no,
        org_code,
        -- attributes
        team_name,
        doctor_name,
        service_package,
        is_key_population,
        status,
        -- dates
        signed_at,
        valid_from,
        valid_to,
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
