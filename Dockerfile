# The qunguard worker image (docker-compose builds it for the `worker` service).
FROM python:3.11-slim
WORKDIR /app
# Only what the wheel is built from (data files ship as package data); deploy/ is mounted into the other
# services by docker-compose and read by pipeline/devtools from a checkout, never by the worker.
# Production install: no `embedded` extra, so no chDB or Tansu; QG_CLICKHOUSE_URL must be clickhouse://.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV QG_WORKER_DATA_DIR=/var/lib/qunguard
ENTRYPOINT ["qunguard"]
CMD ["worker"]
