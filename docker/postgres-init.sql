-- Databases for the stack: one for Prefect (with pg_trgm, which Prefect's search uses), one for MLflow.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
\connect prefect
CREATE EXTENSION IF NOT EXISTS pg_trgm;
