with source as (
    select * from {{ source('ods', 'organization') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || organization_id as organization_key,
        source_system,
        organization_id,
        org_code,
        -- attributes
        organization_code,
        organization_name,
        organization_type,
        organization_level,
        parent_organization_code,
        township,
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
