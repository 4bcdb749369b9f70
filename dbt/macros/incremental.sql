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

{#- The window of ``models`` (a name or a list; a list: the widest of their windows, so models sharing one set of
    rebuilt keys each get every change since their own last build): after (NULL: never built incrementally, so
    everything changed), through, rebuild_all. -#}
{% macro change_window(models) -%}
    {%- set names = [models] if models is string else models -%}
    (select min(after) as after, max(through) as through, bool_or(rebuild_all) as rebuild_all
     from {{ ref('int_changes__window') }}
     where model in ({% for m in names %}'{{ m }}'{{ ',' if not loop.last }}{% endfor %}))
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
    (an int_*__changed table), or every row when that table says rebuild_all or the build is a whole one. A row
    without a key cannot be named by a change, so it is rebuilt every time. -#}
{% macro in_rebuilt(changed_model, column='encounter_key') -%}
    {%- if is_incremental() -%}
    ({{ column }} in (select encounter_key from {{ ref(changed_model) }} where not rebuild_all)
        or {{ column }} is null
        or exists (select 1 from {{ ref(changed_model) }} where rebuild_all))
    {%- else -%}
    true
    {%- endif -%}
{%- endmacro %}


{#- The config of a mart of rows hanging off an encounter (fct_encounter and its facts): appended, after the rows of
    the encounters int_encounters__changed names are deleted; the window recorded when it is built. The model also
    says ``-- depends_on: {{ ref('int_encounters__changed') }}`` (the hooks read it). -#}
{% macro per_encounter_incremental(post_hook=[]) -%}
    {{ return({
        'materialized': 'incremental',
        'incremental_strategy': 'append',
        'on_schema_change': 'append_new_columns',
        'pre_hook': "{% if is_incremental() %}delete from {{ this }} where {{ in_rebuilt('int_encounters__changed') }}{% endif %}",
        'post_hook': ["{{ record_watermark(this.identifier) }}"] + post_hook,
    }) }}
{%- endmacro %}


{#- The per-encounter marts: the incremental models that depend on int_encounters__changed. -#}
{% macro per_encounter_marts() -%}
    {%- set marts = [] -%}
    {%- set changed = 'model.' ~ project_name ~ '.int_encounters__changed' -%}
    {%- if execute -%}
        {%- for node in graph.nodes.values()
            if node.resource_type == 'model' and node.config.materialized == 'incremental'
            and changed in node.depends_on.nodes -%}
            {%- do marts.append(node.name) -%}
        {%- endfor -%}
    {%- endif -%}
    {{ return(marts) }}
{%- endmacro %}


{#- Tests on a per-encounter mart check the rows its last build wrote (every row after a whole build): the other
    rows passed when they were written, and the mart's primary key keeps every key unique across both. This is
    dbt's own hook for a test's ``where`` config, which still applies. -#}
{% macro postgres__get_where_subquery(relation) -%}
    {%- set conditions = [] -%}
    {%- if config.get('where') -%}
        {%- do conditions.append('(' ~ config.get('where') ~ ')') -%}
    {%- endif -%}
    {%- if relation.schema == 'marts' and relation.identifier in per_encounter_marts() -%}
        {%- set changed = adapter.get_relation(database=target.database, schema='intermediate', identifier='int_encounters__changed') -%}
        {%- if changed is not none -%}
            {%- do conditions.append(
                '(encounter_key in (select encounter_key from ' ~ changed ~ ') or encounter_key is null'
                ~ ' or exists (select 1 from ' ~ changed ~ ' where rebuild_all))') -%}
        {%- endif -%}
    {%- endif -%}
    {%- if conditions -%}
        {% do return('(select * from ' ~ relation ~ ' where ' ~ conditions | join(' and ') ~ ') dbt_subquery') %}
    {%- else -%}
        {% do return(relation) %}
    {%- endif -%}
{%- endmacro %}
