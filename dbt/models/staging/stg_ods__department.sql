with source as (
    select * from {{ source('ods', 'department') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || department_id as department_key,
        source_system,
        department_id,
        org_code,
        -- attributes
        department_code,
        department_name,
        department_kind,
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
