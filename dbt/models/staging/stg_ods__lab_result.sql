with source as (
    select * from {{ source('ods', 'lab_result') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || lab_result_id as lab_result_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        lab_result_id,
        lab_order_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        item_code,
        item_source_code,
        item_name,
        result_value,
        numeric_value,
        unit,
        reference_range,
        abnormal_flag,
        specimen,
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
