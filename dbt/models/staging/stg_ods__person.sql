with source as (
    select * from {{ source('ods', 'person') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || local_patient_id as person_key,
        source_system,
        local_patient_id,
        master_id,
        org_code,
        -- attributes
        name,
        sex_code,
        sex_source_value,
        id_type_code,
        id_number,
        id_number_valid,
        id_sex_code,
        phone,
        address,
        ethnicity_code,
        insurance_card_no,
        -- dates
        birth_date,
        id_birth_date,
        registered_at,
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
