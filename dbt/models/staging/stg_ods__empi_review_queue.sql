with source as (
    select * from {{ source('ods', 'empi_review_queue') }}
),

renamed as (
    select
        -- ids
        record_id as review_key,
        candidate as candidate_identity,
        -- attributes
        score as best_score,
        second as second_score,
        -- dates
        queued_at
    from source
)

select * from renamed
