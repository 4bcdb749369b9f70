with source as (
    select * from {{ source('ods', 'surgery') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || surgery_id as surgery_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        surgery_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        procedure_code,
        procedure_source_code,
        procedure_name,
        anaesthesia,
        incision_class_code,
        incision_class_source_value,
        healing_grade_code,
        healing_grade_source_value,
        surgeon_name,
        surgery_level,
        -- dates
        started_at,
        ended_at,
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
