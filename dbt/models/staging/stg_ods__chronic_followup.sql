with source as (
    select * from {{ source('ods', 'chronic_followup') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || followup_id as chronic_followup_key,
        source_system || '|' || health_record_no as health_record_key,
        source_system || '|' || registry_id as chronic_registry_key,
        source_system,
        followup_id,
        registry_id,
        health_record_no,
        org_code,
        -- attributes
        disease,
        followup_method,
        systolic_bp,
        diastolic_bp,
        fasting_glucose,
        is_controlled,
        doctor_name,
        medication_adherence_code,
        hypoglycaemia_code,
        -- dates
        followup_date,
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
