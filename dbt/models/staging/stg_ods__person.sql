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
        -- demographics
        name,
        sex_code,
        birth_date,
        id_type_code,
        id_number,
        id_number_valid,
        phone,
        address,
        -- dates
        registered_at,
        source_updated_at
    from source
),

final as (
    select * from renamed
)

select * from final
