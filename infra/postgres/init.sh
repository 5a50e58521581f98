#!/bin/sh
# Create the MLflow database beside Prefect's (POSTGRES_DB) on first start.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$MLFLOW_DB\";"
