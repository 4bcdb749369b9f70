with source as (
    select * from {{ source('ods', 'bed') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || bed_id as bed_key,
        source_system,
        bed_id,
        current_encounter_id,
        org_code,
        -- attributes
        ward_code,
        ward_name,
        bed_kind,
        is_open,
        is_occupied,
        -- dates
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
