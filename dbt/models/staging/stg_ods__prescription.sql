with source as (
    select * from {{ source('ods', 'prescription') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || prescription_item_id as prescription_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        prescription_item_id,
        prescription_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        drug_code,
        drug_source_code,
        drug_name,
        atc_code,
        specification,
        quantity,
        unit,
        unit_price,
        amount,
        frequency_code,
        drug_category,
        -- dates
        prescribed_at,
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
