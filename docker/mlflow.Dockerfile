# MLflow tracking server: Postgres backend store, S3 (or S3-compatible) artifact store.
# Build from the repository root:  docker build -f docker/mlflow.Dockerfile -t dckd-mlflow:0.1.0 .
FROM python:3.11.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN pip install mlflow==3.17.2 psycopg2-binary==2.9.10 "boto3>=1.34,<2" \
    && useradd --create-home --uid 1000 mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000

# The stores come from the environment (mlflow server reads these variables for its options):
#   MLFLOW_BACKEND_STORE_URI      postgresql://USER:PASSWORD@HOST:5432/mlflow  (from a Secret)
#   MLFLOW_ARTIFACTS_DESTINATION  s3://BUCKET/mlflow   (artifacts proxied by the server)
#   MLFLOW_S3_ENDPOINT_URL        only for an S3-compatible store (MinIO)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY  (from a Secret, or an instance role)
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
