with source as (
    select * from {{ source('ods', 'encounter') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || encounter_id as encounter_key,
        source_system || '|' || local_patient_id as person_key,
        source_system,
        encounter_id,
        org_code,
        -- classification
        encounter_class_code,
        department_code,
        department_name,
        doctor_name,
        primary_diagnosis_code,
        primary_diagnosis_name,
        -- dates
        visit_at,
        visit_date,
        source_updated_at
    from source
),

final as (
    select * from renamed
)

select * from final
