with source as (
    select * from {{ source('ods', 'public_health_service') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || service_id as public_health_service_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || health_record_no as health_record_key,
        source_system,
        service_id,
        health_record_no,
        local_patient_id,
        org_code,
        -- attributes
        service_kind,
        id_number,
        person_name,
        systolic_bp,
        diastolic_bp,
        weight_kg,
        height_cm,
        gestational_weeks,
        result,
        doctor_name,
        self_assessment_code,
        self_care_code,
        -- dates
        service_date,
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
