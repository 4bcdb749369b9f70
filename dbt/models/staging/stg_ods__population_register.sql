with source as (
    select * from {{ source('ods', 'population_register') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || id_number as population_register_key,
        source_system,
        id_number,
        org_code,
        -- attributes
        name,
        sex_code,
        ethnicity_code,
        household_no,
        township,
        village,
        address,
        residence_status,
        register_month,
        -- dates
        birth_date,
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
