with source as (
    select * from {{ source('ods', 'empi_review_queue') }}
),

renamed as (
    select
        -- ids
        record_id as review_key,
        candidate as candidate_master_id,
        candidate_record as candidate_record_key,
        -- attributes
        evidence as comparison_levels,
        score as best_score,
        second as second_score,
        -- dates
        queued_at
    from source
)

select * from renamed
