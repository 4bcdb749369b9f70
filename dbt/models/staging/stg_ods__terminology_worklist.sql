with source as (
    select * from {{ source('ods', 'terminology_worklist') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || entity || '|' || source_table || '|' || "column" || '|' || source_code
            as terminology_worklist_key,
        source_system,
        entity,
        source_table,
        "column" as column_name,
        source_code,
        concept_map,
        -- attributes
        "rows" as row_count,
        example_keys
    from source
),

final as (
    select * from renamed
)

select * from final
