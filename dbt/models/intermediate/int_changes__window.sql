{{ config(materialized='table') }}
-- The change-log window of every incremental mart in this run (macros/incremental.sql): the changes written by
-- transactions from ``after`` (the snapshot xmin its last build read) to ``through`` (this run's, exclusive).
-- rebuild_all: never built incrementally, or last built longer ago than the change log keeps (35 days).
with models as (
    select model
    from (values
        {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.config.materialized == 'incremental' %}
        ('{{ node.name }}'){{ ',' if not loop.last }}
        {%- endfor %}
    ) as incremental (model)
)

select
    models.model,
    watermark.through as after,
    pg_snapshot_xmin(pg_current_snapshot()) as through,
    (watermark.through is null or watermark.built_at < now() - interval '34 days') as rebuild_all
from models
left join dbt_meta.incremental_watermark as watermark on watermark.model = models.model
