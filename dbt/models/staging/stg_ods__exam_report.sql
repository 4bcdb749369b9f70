with source as (
    select * from {{ source('ods', 'exam_report') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || exam_report_id as exam_report_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        exam_report_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        exam_class_code,
        exam_class_source_value,
        exam_item_name,
        body_part,
        findings,
        conclusion,
        -- dates
        reported_at,
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
