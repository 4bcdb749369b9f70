-- 资源月表: staff and open beds of every institution in every month the data covers, as they were at the month's
-- end (the current month: on the last day with data), read from the SCD2 snapshots, so a past month's
-- denominators use that month's resources and not today's.
-- A version is valid from dbt_valid_from to dbt_valid_to; a version captured by the very first snapshot run counts
-- as valid since ever (what was there before the snapshots began is only known from that first capture).
-- open_beds: the hospital's own bed table where it sends one (开放床位 = beds flagged open), else the registry's
-- open beds (dim_organization, as of the month end).
with bounds as (
    select min(visit_date) as first_day, max(visit_date) as last_day
    from {{ ref('fct_encounter') }}
    where is_counted
),

months as (
    select
        month_start::date as month,
        least((month_start + interval '1 month' - interval '1 day')::date, bounds.last_day) as as_of_date,
        -- the end of the as-of day, in Beijing wall-clock time like the snapshots' validity columns
        (least((month_start + interval '1 month' - interval '1 day')::date, bounds.last_day) + 1)::timestamp
            as as_of_at
    from bounds,
        generate_series(date_trunc('month', bounds.first_day), date_trunc('month', bounds.last_day),
                        interval '1 month') as month_start
),

institutions as (
    select org_code, open_beds from {{ ref('dim_organization') }}
),

practitioner_versions as (
    select
        *,
        case when captured_at = min(captured_at) over () then '-infinity'::timestamp else dbt_valid_from end
            as valid_from,
        coalesce(dbt_valid_to, 'infinity'::timestamp) as valid_to
    from {{ ref('snp_practitioner') }}
),

bed_versions as (
    select
        *,
        case when captured_at = min(captured_at) over () then '-infinity'::timestamp else dbt_valid_from end
            as valid_from,
        coalesce(dbt_valid_to, 'infinity'::timestamp) as valid_to
    from {{ ref('snp_bed') }}
),

organization_versions as (
    select
        *,
        case when captured_at = min(captured_at) over () then '-infinity'::timestamp else dbt_valid_from end
            as valid_from,
        coalesce(dbt_valid_to, 'infinity'::timestamp) as valid_to
    from {{ ref('snp_organization') }}
),

staff as (
    select
        months.month,
        practitioner_versions.org_code,
        count(*) filter (where practitioner_versions.is_physician) as physicians,
        count(*) as practitioners,
        count(*) filter (where practitioner_versions.is_physician and practitioner_versions.is_general_practitioner)
            as general_practitioners,
        count(*) filter (where practitioner_versions.is_general_practitioner
                         and practitioner_versions.has_prescribing_right) as prescribing_gps
    from months
    inner join practitioner_versions
        on practitioner_versions.valid_from <= months.as_of_at
        and practitioner_versions.valid_to > months.as_of_at
    where practitioner_versions.is_active
    group by months.month, practitioner_versions.org_code
),

beds as (
    select
        months.month,
        bed_versions.org_code,
        count(*) filter (where bed_versions.is_open) as open_beds
    from months
    inner join bed_versions
        on bed_versions.valid_from <= months.as_of_at
        and bed_versions.valid_to > months.as_of_at
    group by months.month, bed_versions.org_code
),

registry_beds as (
    select months.month, organization_versions.org_code, organization_versions.open_beds
    from months
    inner join organization_versions
        on organization_versions.valid_from <= months.as_of_at
        and organization_versions.valid_to > months.as_of_at
),

final as (
    select
        institutions.org_code::text as org_code,
        months.month::date as month,
        months.as_of_date::date as as_of_date,
        coalesce(staff.physicians, 0)::integer as physicians,
        coalesce(staff.practitioners, 0)::integer as practitioners,
        coalesce(staff.general_practitioners, 0)::integer as general_practitioners,
        coalesce(staff.prescribing_gps, 0)::integer as prescribing_gps,
        case when beds.open_beds > 0 then beds.open_beds
             else coalesce(registry_beds.open_beds, institutions.open_beds, 0) end::integer as open_beds,
        case when beds.open_beds > 0 then 'bed_table' else 'registry' end::text as open_beds_source
    from institutions
    cross join months
    left join staff on staff.org_code = institutions.org_code and staff.month = months.month
    left join beds on beds.org_code = institutions.org_code and beds.month = months.month
    left join registry_beds on registry_beds.org_code = institutions.org_code and registry_beds.month = months.month
)

select * from final
