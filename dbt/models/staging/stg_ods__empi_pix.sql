with source as (
    select * from {{ source('ods', 'empi_pix') }}
),

renamed as (
    select
        -- ids
        record_id as pix_key,
        master_id,
        source_system,
        local_patient_id,
        -- attributes
        decision as match_decision,
        score as match_score,
        id_valid as id_number_valid,
        -- dates
        matched_at
    from source
)

select * from renamed
