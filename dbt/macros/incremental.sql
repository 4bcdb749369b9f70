{#-
  Incremental marts: each is rebuilt for the keys the publishes since its last build changed, read from
  ods.published_change (spark_jobs/publish.py). The window of a build is a range of writing transactions:
  from the xmin of the snapshot its last build read (included) to the xmin of this build's snapshot (excluded);
  every transaction older than a snapshot's xmin has ended, so no change is read twice or missed, however long
  a publish runs.
  The window is taken once per run (int_changes__window) and recorded after the model is built
  (dbt_meta.incremental_watermark), so a failed build reads the same changes again.
-#}

{% macro create_incremental_watermark() %}
    create schema if not exists dbt_meta;
    create table if not exists dbt_meta.incremental_watermark (
        model text primary key, through xid8 not null, built_at timestamptz not null default now());
{% endmacro %}

{#- the model's window: after (NULL: never built incrementally, so everything changed), through -#}
{% macro change_window(model_name) -%}
    (select after, through, rebuild_all from {{ ref('int_changes__window') }} where model = '{{ model_name }}')
{%- endmacro %}

{#- post-hook: this build consumed its window -#}
{% macro record_watermark(model_name) -%}
    insert into dbt_meta.incremental_watermark (model, through)
    select model, through from {{ ref('int_changes__window') }} where model = '{{ model_name }}'
    on conflict (model) do update set through = excluded.through, built_at = now()
{%- endmacro %}

{#- The change-log rows of ``datasets`` in the model's window (rebuild_all: some change can only be answered
    by rebuilding everything — a whole table reloaded, or a window older than the log keeps). -#}
{% macro changes_in_window(model_name, datasets) -%}
    select c.dataset, c.source_system, c.source_table, c.source_key, c.before
    from {{ source('ods', 'published_change') }} as c
    cross join {{ change_window(model_name) }} as w
    where c.dataset in ({% for d in datasets %}'{{ d }}'{{ ',' if not loop.last }}{% endfor %})
        and c.xact >= w.after and c.xact < w.through
{%- endmacro %}

{#- The staging key of the rows of ``dataset`` a window changed, now and as they were: ``id_column`` is the
    column that makes the key (source_system || '|' || id_column, as in staging). A source reloaded whole
    (source_key NULL) names all its rows now; its rows as they were are in the mart (the caller adds them). -#}
{% macro changed_keys(model_name, dataset, id_column) -%}
    select now.source_system || '|' || now.{{ id_column }} as changed_key
    from ({{ changes_in_window(model_name, [dataset]) }}) as c
    inner join {{ source('ods', dataset) }} as now
        on now.source_system = c.source_system
        and (c.source_key is null or (now.source_table = c.source_table and now.source_key = c.source_key))
    union
    select (c.before ->> 'source_system') || '|' || (c.before ->> '{{ id_column }}')
    from ({{ changes_in_window(model_name, [dataset]) }}) as c
    where c.before is not null
{%- endmacro %}

{#- The condition choosing the rows an incremental build rebuilds: ``column`` among the keys of ``changed_model``
    (an int_*__changed table), or every row when that table says rebuild_all or the build is a whole one. -#}
{% macro in_rebuilt(changed_model, column='encounter_key') -%}
    {%- if is_incremental() -%}
    ({{ column }} in (select encounter_key from {{ ref(changed_model) }} where not rebuild_all)
        or exists (select 1 from {{ ref(changed_model) }} where rebuild_all))
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}
