with source as (
    select * from {{ source('ods', 'fee') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || fee_id as fee_key,
        source_system || '|' || local_patient_id as person_key,
        source_system || '|' || encounter_id as encounter_key,
        source_system,
        fee_id,
        encounter_id,
        local_patient_id,
        org_code,
        -- attributes
        item_code,
        item_name,
        fee_category_code,
        fee_category_source_value,
        quantity,
        unit_price,
        amount,
        is_refunded,
        -- dates
        charged_at,
        refunded_at,
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
