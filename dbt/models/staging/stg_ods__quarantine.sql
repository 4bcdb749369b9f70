with source as (
    select * from {{ source('ods', 'quarantine') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || entity || '|' || source_table || '|' || record_key || '|' || rule_id
            as quarantine_key,
        source_system,
        source_table,
        entity,
        record_key,
        rule_id,
        org_code,
        -- attributes
        reason,
        raw_payload,
        -- dates
        source_updated_at,
        detected_at,
        -- lineage
        source_position
    from source
),

final as (
    select * from renamed
)

select * from final
