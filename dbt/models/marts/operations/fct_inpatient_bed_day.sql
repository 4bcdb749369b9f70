-- 住院床日（日）: occupied beds per institution and calendar day. A counted inpatient stay (就诊类型 300) occupies
-- a bed on a day when it is in hospital at 24:00 (admitted on or before the day, discharged after it or still in);
-- a stay admitted and discharged on the same day counts 1 on that day (实际占用总床日数 = Σ occupied_beds).
-- Every institution with open beds gets a row for every day of the data (0 where nobody was in), as does any
-- institution that had a stay without registered beds, so no bed-day is lost.
with bounds as (
    select min(visit_date) as first_day, max(visit_date) as last_day
    from {{ ref('fct_encounter') }}
    where is_counted
),

days as (
    select day::date as day
    from bounds, generate_series(bounds.first_day, bounds.last_day, interval '1 day') as day
),

stays as (
    select org_code, admission_date, discharge_date
    from {{ ref('fct_encounter') }}
    where is_counted and encounter_class_code = '300'
),

institutions as (
    select org_code, open_beds from {{ ref('dim_organization') }}
    where open_beds > 0 or org_code in (select org_code from stays)
),

occupancy as (
    select
        stays.org_code,
        days.day,
        count(*) filter (where stays.discharge_date is null or stays.discharge_date > days.day)
            as in_hospital_at_midnight,
        count(*) filter (where stays.admission_date = days.day and stays.discharge_date = days.day)
            as same_day_stays,
        count(*) filter (where stays.admission_date = days.day) as admissions,
        count(*) filter (where stays.discharge_date = days.day) as discharges
    from stays
    inner join days
        on stays.admission_date <= days.day
        and (stays.discharge_date is null or stays.discharge_date >= days.day)
    group by stays.org_code, days.day
),

final as (
    select
        institutions.org_code::text as org_code,
        days.day::date as day,
        (coalesce(occupancy.in_hospital_at_midnight, 0) + coalesce(occupancy.same_day_stays, 0))::integer
            as occupied_beds,
        coalesce(occupancy.in_hospital_at_midnight, 0)::integer as in_hospital_at_midnight,
        coalesce(occupancy.same_day_stays, 0)::integer as same_day_stays,
        coalesce(occupancy.admissions, 0)::integer as admissions,
        coalesce(occupancy.discharges, 0)::integer as discharges,
        institutions.open_beds::integer as open_beds
    from institutions
    cross join days
    left join occupancy
        on occupancy.org_code = institutions.org_code
        and occupancy.day = days.day
)

select * from final
