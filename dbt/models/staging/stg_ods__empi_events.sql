with source as (
    select * from {{ source('ods', 'empi_events') }}
),

renamed as (
    select
        -- ids
        event_id,
        -- attributes
        action,
        actor,
        reason,
        record_ids,
        master_ids,
        -- dates
        at as occurred_at
    from source
)

select * from renamed
