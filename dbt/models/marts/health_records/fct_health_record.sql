-- 居民健康档案: one row per 健康档案, with its resident, its managing institution and whether it is used.
-- is_dynamic (健康档案使用率's numerator, 有动态记录的档案): at least one public-health service or follow-up on this
-- record (fct_public_health_service: any kind but filing itself and contract signing) in the 12 months up to the
-- data's last day (int_public_health__data_bounds), i.e. service_date in (last_day − 12 months, last_day].
with records as (
    select * from {{ ref('int_public_health__health_records') }}
),

bounds as (
    select last_day from {{ ref('int_public_health__data_bounds') }}
),

services as (
    select health_record_no, service_date
    from {{ ref('fct_public_health_service') }}
    where service_kind not in ('filing', 'contract') and health_record_no is not null
),

record_services as (
    select
        services.health_record_no,
        max(services.service_date) as last_service_date,
        count(*) filter (where services.service_date > (bounds.last_day - interval '12 months')::date)
            as services_last_12_months
    from services
    cross join bounds
    -- a date after the data's last day is a typo, not a service
    where services.service_date <= bounds.last_day
    group by services.health_record_no
),

-- 重复建档: a second active record of the same resident (the earliest filed one is the resident's record)
ranked as (
    select
        records.*,
        case when records.is_active and records.master_id is not null then
            row_number() over (
                partition by records.master_id, records.is_active
                order by records.filed_date nulls last, records.health_record_no
            )
        end as active_rank
    from records
),

final as (
    select
        ranked.health_record_no::text as health_record_no,
        ranked.master_id::text as master_id,
        ranked.township::text as township,
        ranked.village::text as village,
        ranked.org_code::text as org_code,
        ranked.responsible_doctor::text as responsible_doctor,
        ranked.filed_at::timestamptz as filed_at,
        ranked.filed_date::date as filed_date,
        ranked.status::text as status,
        ranked.is_active::boolean as is_active,
        coalesce(ranked.active_rank > 1, false)::boolean as is_duplicate,
        record_services.last_service_date::date as last_service_date,
        coalesce(record_services.services_last_12_months, 0)::integer as services_last_12_months,
        (coalesce(record_services.services_last_12_months, 0) > 0)::boolean as is_dynamic,
        bounds.last_day::date as dynamic_as_of
    from ranked
    cross join bounds
    left join record_services on record_services.health_record_no = ranked.health_record_no
)

select * from final
