# The qunguard image (docker-compose builds it for the `worker` and `migrate` services).
# Build stage: the wheel, from only what it is built from (data files ship as package data; deploy/
# is mounted into the other services by docker-compose, never read by the worker).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY agents ./agents
COPY schemas ./schemas
RUN pip wheel --no-cache-dir --no-deps -w /dist .

# Run stage: the wheel installed as users install it (no `embedded` extra, so no chDB or Tansu:
# QG_CLICKHOUSE_URL must be clickhouse://), run by an unprivileged user.
FROM python:3.11-slim
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist \
    && useradd --system --uid 10001 --home-dir /var/lib/qunguard --create-home qunguard
USER qunguard
WORKDIR /var/lib/qunguard
ENV QG_WORKER_DATA_DIR=/var/lib/qunguard/worker
ENTRYPOINT ["qunguard"]
CMD ["worker"]
