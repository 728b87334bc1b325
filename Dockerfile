# The qunguard worker image (docker-compose builds it for the `worker` service).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY schemas ./schemas
COPY deploy ./deploy
RUN pip install --no-cache-dir .
ENV QG_WORKER_DATA_DIR=/var/lib/qunguard
ENTRYPOINT ["qunguard"]
CMD ["worker"]
