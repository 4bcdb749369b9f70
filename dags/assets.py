"""Assets the platform's DAGs produce and consume, declared once: the lineage the Airflow UI shows.

bronze (one per source) → silver → empi → quality → marts → exports (one per feed); ``late_arrivals`` is
emitted when data of a day judged missing has come, and schedules the catch-up DAG.
"""

from airflow.sdk import Asset


def bronze(source: str) -> Asset:
    return Asset(f"xydrc://bronze/{source}")


def export_feed(feed: str) -> Asset:
    return Asset(f"xydrc://exports/{feed}")


NAMED = {
    "silver": Asset("xydrc://silver"),
    "empi": Asset("xydrc://empi"),
    "quality": Asset("xydrc://quality"),
    "marts": Asset("xydrc://marts"),
}
LATE_ARRIVALS = Asset("xydrc://ingest/late_arrivals")
