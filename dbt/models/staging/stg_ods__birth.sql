with source as (
    select * from {{ source('ods', 'birth') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || birth_id as birth_key,
        source_system,
        birth_id,
        org_code,
        -- attributes
        mother_name,
        mother_id_number,
        newborn_name,
        newborn_sex_code,
        birth_weight_g,
        gestational_weeks,
        delivery_mode,
        birth_place_org_code,
        -- dates
        born_at,
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
