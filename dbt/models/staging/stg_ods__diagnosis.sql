with source as (
    select * from {{ source('ods', 'diagnosis') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || diagnosis_id as diagnosis_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        diagnosis_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        diagnosis_kind,
        is_primary,
        diagnosis_code,
        diagnosis_source_code,
        diagnosis_name,
        tcm_disease_code,
        tcm_syndrome_code,
        -- dates
        diagnosed_at,
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
