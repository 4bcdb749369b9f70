with source as (
    select * from {{ source('ods', 'practitioner') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || practitioner_id as practitioner_key,
        source_system,
        practitioner_id,
        org_code,
        -- attributes
        name,
        role,
        title,
        licence_no,
        department_code,
        is_active,
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
