with source as (
    select * from {{ source('ods', 'insurance_settlement') }}
),

renamed as (
    select
        -- ids
        source_system || '|' || settlement_id as insurance_settlement_key,
        source_system,
        settlement_id,
        org_code,
        -- attributes
        id_number,
        patient_name,
        insurance_type,
        medical_org_code,
        medical_org_name,
        is_out_of_county,
        encounter_kind,
        diagnosis_code,
        total_amount,
        fund_paid,
        self_paid,
        -- dates
        admitted_at,
        discharged_at,
        settled_at,
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
