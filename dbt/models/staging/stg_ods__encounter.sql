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
        local_patient_id,
        bed_id,
        org_code,
        -- attributes
        encounter_class_code,
        encounter_class_source_value,
        department_code,
        department_name,
        doctor_name,
        primary_diagnosis_code,
        primary_diagnosis_name,
        payment_category_code,
        payment_category_source_value,
        length_of_stay_days,
        discharge_outcome_code,
        is_first_visit,
        status,
        -- dates
        visit_at,
        visit_date,
        admitted_at,
        discharged_at,
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
