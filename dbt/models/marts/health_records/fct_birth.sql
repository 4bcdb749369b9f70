-- 出生登记: one row per registered birth (活产), with the mother's master id and township of residence.
-- Mother: her ID number on the 出生登记 → int_residents__id_numbers (first 17 characters; register residents without
-- an EMPI record get their provisional key). The file's 母亲患者编号 is not carried into silver.
-- 孕周: the 出生登记 file has none; it is taken from the mother's 分娩 row in the 妇幼 follow-ups (the delivery row
-- carries the admission date, up to 2 days before the birth).
with births as (
    select * from {{ ref('stg_ods__birth') }}
),

id_numbers as (
    select * from {{ ref('int_residents__id_numbers') }}
),

residents as (
    select master_id, township from {{ ref('dim_resident') }}
),

deliveries as (
    select master_id, service_date, gestational_weeks
    from {{ ref('fct_public_health_service') }}
    where service_kind = 'delivery' and master_id is not null and gestational_weeks is not null
),

resolved as (
    select
        births.*,
        (births.born_at at time zone 'Asia/Shanghai')::date as birth_date,
        id_numbers.master_id as mother_master_id
    from births
    left join id_numbers
        on id_numbers.id17 = {{ id17('births.mother_id_number') }}
),

delivery_weeks as (
    select distinct on (resolved.birth_key)
        resolved.birth_key,
        deliveries.gestational_weeks
    from resolved
    inner join deliveries
        on deliveries.master_id = resolved.mother_master_id
        and deliveries.service_date between resolved.birth_date - 2 and resolved.birth_date
    order by resolved.birth_key, deliveries.service_date desc
),

final as (
    select
        resolved.birth_key::text as birth_key,
        resolved.birth_id::text as birth_id,
        resolved.birth_date::date as birth_date,
        resolved.born_at::timestamptz as born_at,
        -- 出生机构; the reporting institution when the place is missing
        coalesce(resolved.birth_place_org_code, resolved.org_code)::text as org_code,
        resolved.mother_master_id::text as mother_master_id,
        residents.township::text as township,
        resolved.newborn_sex_code::text as newborn_sex_code,
        resolved.birth_weight_g::integer as birth_weight_g,
        (resolved.birth_weight_g < 2500)::boolean as is_low_birth_weight,
        coalesce(resolved.gestational_weeks, delivery_weeks.gestational_weeks)::integer as gestational_weeks,
        (case
            when resolved.gestational_weeks is not null then '出生登记'
            when delivery_weeks.gestational_weeks is not null then '分娩随访'
        end)::text as gestational_weeks_source,
        resolved.delivery_mode::text as delivery_mode,
        resolved.source_system::text as source_system
    from resolved
    left join residents on residents.master_id = resolved.mother_master_id
    left join delivery_weeks on delivery_weeks.birth_key = resolved.birth_key
)

select * from final
