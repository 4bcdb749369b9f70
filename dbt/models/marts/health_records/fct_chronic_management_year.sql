-- 慢病管理（年）: one row per 高血压 / 2型糖尿病 管理卡 per year, from the year it was registered to the data's last
-- year, with that year's follow-ups. Rules (国家基本公共卫生服务规范（第三版）):
--   is_managed            registered by the year's end and still in management that year: 在管 (or a status the
--                         concept map could not read) every year; 失访/死亡/迁出 up to the year of the card's last
--                         follow-up (the source does not say when management ended); 作废 cards are left out.
--   face to face          随访方式 门诊 or 家庭 (code 1 / 2); 电话 is not. A method the concept map could not read
--                         is taken from its UNMAPPED flag (e.g. '门诊' typed as text).
--   is_standard_managed   face_to_face_followups >= 4 in the year.
--   is_controlled_last    at the year's last follow-up: hypertension SBP < 140 and DBP < 90; diabetes fasting
--                         glucose < 7.0 mmol/L. The measurement wins; the source's is_controlled (the doctor's
--                         此次随访分类) is used only when the measurement is missing.
-- A follow-up without a card (typed on a duplicate 健康档案) counts for the resident's card of the same disease.
with bounds as (
    select last_day from {{ ref('int_public_health__data_bounds') }}
),

records as (
    select * from {{ ref('int_public_health__health_records') }}
),

persons as (
    select person_key, master_id from {{ ref('stg_ods__person') }}
),

residents as (
    select master_id, township from {{ ref('dim_resident') }}
),

registry_cards as (
    select
        registry.*,
        case
            when registry.disease in ('hypertension', '高血压') then 'hypertension'
            when registry.disease in ('diabetes', '2型糖尿病', '糖尿病') then 'diabetes'
        end as disease_family,
        coalesce(records.master_id, persons.master_id) as master_id,
        records.township as record_township
    from {{ ref('stg_ods__chronic_registry') }} as registry
    left join records on records.health_record_key = registry.health_record_key
    left join persons on persons.person_key = registry.health_record_key
    where registry.status is distinct from '作废'
),

registry as (
    -- only the two managed diseases
    select * from registry_cards where disease_family is not null
),

-- the resident's card per disease, for follow-ups typed without one
resident_cards as (
    select distinct on (master_id, disease_family)
        master_id,
        disease_family,
        chronic_registry_key
    from registry
    where master_id is not null
    order by master_id, disease_family, registered_at nulls last, chronic_registry_key
),

followups as (
    select
        followups.*,
        case
            when followups.disease in ('hypertension', '高血压') then 'hypertension'
            when followups.disease in ('diabetes', '2型糖尿病', '糖尿病') then 'diabetes'
        end as disease_family,
        coalesce(records.master_id, persons.master_id) as master_id,
        coalesce(
            followups.followup_method,
            substring(followups.dq_flags from 'UNMAPPED:followup_method:([^,]*)')
        ) as method
    from {{ ref('stg_ods__chronic_followup') }} as followups
    cross join bounds
    left join records on records.health_record_key = followups.health_record_key
    left join persons on persons.person_key = followups.health_record_key
    -- a date after the data's last day is a typo, not a follow-up
    where followups.followup_date <= bounds.last_day
),

followups_on_cards as (
    select
        followups.*,
        coalesce(own_card.chronic_registry_key, resident_cards.chronic_registry_key) as registry_key,
        coalesce(followups.method in ('门诊', '家庭', '1', '2'), false) as is_face_to_face
    from followups
    left join registry as own_card on own_card.chronic_registry_key = followups.chronic_registry_key
    left join resident_cards
        on own_card.chronic_registry_key is null
        and resident_cards.master_id = followups.master_id
        and resident_cards.disease_family = followups.disease_family
),

card_last_followup as (
    select registry_key, min(followup_date) as first_followup_ever, max(followup_date) as last_followup_ever
    from followups_on_cards
    group by registry_key
),

card_years as (
    select
        registry.*,
        years.year_start::date as year_start,
        extract(year from years.year_start)::integer as year,
        card_last_followup.first_followup_ever,
        card_last_followup.last_followup_ever
    from registry
    cross join bounds
    left join card_last_followup on card_last_followup.registry_key = registry.chronic_registry_key
    cross join lateral generate_series(
        -- from the registration year (or an earlier follow-up's) to the data's last year
        date_trunc('year', least(registry.registered_at, card_last_followup.first_followup_ever)),
        date_trunc('year', bounds.last_day),
        interval '1 year'
    ) as years(year_start)
),

year_followups as (
    select
        registry_key,
        extract(year from followup_date)::integer as year,
        count(*) as followups,
        count(*) filter (where is_face_to_face) as face_to_face_followups,
        max(followup_date) as last_followup_date
    from followups_on_cards
    where registry_key is not null
    group by 1, 2
),

last_followup as (
    select distinct on (registry_key, extract(year from followup_date))
        registry_key,
        extract(year from followup_date)::integer as year,
        systolic_bp,
        diastolic_bp,
        fasting_glucose,
        is_controlled
    from followups_on_cards
    where registry_key is not null
    order by registry_key, extract(year from followup_date), followup_date desc, source_updated_at desc nulls last,
        chronic_followup_key desc
),

final as (
    select
        card_years.year::integer as year,
        card_years.year_start::date as year_start,
        card_years.chronic_registry_key::text as registry_key,
        -- 2型 only for diabetes: a 1型 / 妊娠 / 其他 diabetes card (tnblx) is diabetes_other
        (case
            when card_years.disease_family = 'diabetes'
                and split_part(card_years.diagnosis_code, '.', 1) in ('E10', 'E13', 'O24') then 'diabetes_other'
            else card_years.disease_family
        end)::text as disease,
        card_years.diagnosis_code::text as diagnosis_code,
        card_years.master_id::text as master_id,
        card_years.health_record_no::text as health_record_no,
        coalesce(card_years.record_township, residents.township)::text as township,
        card_years.org_code::text as org_code,
        card_years.managing_doctor::text as managing_doctor,
        card_years.registered_at::date as registered_date,
        card_years.status::text as status,
        (
            coalesce(card_years.registered_at, card_years.first_followup_ever)
                <= (card_years.year_start + interval '1 year' - interval '1 day')::date
            and (
                card_years.status is null
                or card_years.status = '在管'
                or card_years.year <= extract(year from coalesce(card_years.last_followup_ever, card_years.registered_at))
            )
        )::boolean as is_managed,
        coalesce(year_followups.followups, 0)::integer as followups,
        coalesce(year_followups.face_to_face_followups, 0)::integer as face_to_face_followups,
        (coalesce(year_followups.face_to_face_followups, 0) >= 4)::boolean as is_standard_managed,
        year_followups.last_followup_date::date as last_followup_date,
        last_followup.systolic_bp::integer as last_systolic_bp,
        last_followup.diastolic_bp::integer as last_diastolic_bp,
        last_followup.fasting_glucose::double precision as last_fasting_glucose,
        coalesce(case
            when card_years.disease_family = 'hypertension'
                and last_followup.systolic_bp is not null and last_followup.diastolic_bp is not null
                then last_followup.systolic_bp < 140 and last_followup.diastolic_bp < 90
            when card_years.disease_family = 'diabetes' and last_followup.fasting_glucose is not null
                then last_followup.fasting_glucose < 7.0
            else last_followup.is_controlled
        end, false)::boolean as is_controlled_last,
        (case
            when last_followup.registry_key is null then null
            when card_years.disease_family = 'hypertension'
                and last_followup.systolic_bp is not null and last_followup.diastolic_bp is not null
                then 'measurement'
            when card_years.disease_family = 'diabetes' and last_followup.fasting_glucose is not null
                then 'measurement'
            when last_followup.is_controlled is not null then 'source_flag'
            else 'unknown'
        end)::text as controlled_rule
    from card_years
    left join residents on residents.master_id = card_years.master_id
    left join year_followups
        on year_followups.registry_key = card_years.chronic_registry_key
        and year_followups.year = card_years.year
    left join last_followup
        on last_followup.registry_key = card_years.chronic_registry_key
        and last_followup.year = card_years.year
)

select * from final
