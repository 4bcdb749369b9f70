with source as (
    select * from {{ source('ods', 'referral') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || referral_id as referral_key,
        source_system,
        referral_id,
        org_code,
        -- attributes
        patient_name,
        id_number,
        sex_code,
        from_organization_code,
        to_organization_code,
        direction,
        direction_source_value,
        diagnosis_code,
        diagnosis_name,
        reason,
        status,
        -- dates
        requested_at,
        received_at,
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
