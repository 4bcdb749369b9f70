#!/bin/bash
# Container equivalent of start_postgres in scripts/services.sh: roles and databases for the platform.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres <<SQL
CREATE ROLE drc LOGIN REPLICATION PASSWORD '${DRC_PG_PASSWORD}';
CREATE ROLE airflow LOGIN PASSWORD '${DRC_AIRFLOW_DB_PASSWORD}';
CREATE ROLE superset LOGIN PASSWORD '${DRC_SUPERSET_DB_PASSWORD}';
CREATE ROLE drc_api LOGIN PASSWORD '${DRC_API_DB_PASSWORD}';
CREATE DATABASE warehouse OWNER drc;
CREATE DATABASE airflow OWNER airflow;
CREATE DATABASE superset OWNER superset;
\\c warehouse
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SQL
