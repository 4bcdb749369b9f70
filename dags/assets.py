"""Assets the platform's DAGs produce and consume, declared once."""

from airflow.sdk import Asset

BRONZE_RMYY_HIS = Asset("xydrc://bronze/rmyy_his")
SILVER = Asset("xydrc://silver")
MART_DAILY_VISITS = Asset("xydrc://marts/fct_daily_outpatient_visits")
EXPORT_DAILY_VISITS = Asset("xydrc://exports/daily_visits")
