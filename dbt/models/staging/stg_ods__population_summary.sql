with source as (
    select * from {{ source('ods', 'population_summary') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || summary_id as population_summary_key,
        source_system,
        summary_id,
        org_code,
        -- attributes
        township,
        sex_code,
        age_group,
        population,
        register_month,
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
