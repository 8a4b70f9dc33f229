# MLflow tracking server with a PostgreSQL backend and artifacts proxied to S3-compatible storage.
FROM python:3.11.11-slim-bookworm
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg2-binary>=2.9" "boto3>=1.35"
EXPOSE 5000
