"""Prometheus metrics and the health endpoint of qunguard's long-running processes.

Each process has its own registry (not prometheus_client's global one), so tests and the demo can
run several in one interpreter. The delivery path reports what it stored (`WorkerMetrics.admitted`,
`.written`); the worker's timers report consumer lag once they have asked the broker for the
high watermarks. `serve()` answers `/metrics` (the Prometheus text format) and `/healthz`
(200 while `health()` says ok, else 503 with the reason) on an aiohttp server in the process's loop.

Label values are bounded: event kinds and rule ids come from the schema and the rule catalogue,
dead-letter reasons are cut at their first `:` (a field name, "invalid JSON", "detector error",
a bridge's name), partitions are the topic's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from schemas.rows import RAW_COLUMNS

log = logging.getLogger("qunguard.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KIND = RAW_COLUMNS.index("kind")
Health = Callable[[], tuple[bool, dict[str, Any]]]


def reason_class(error: str) -> str:
    """A dead letter's reason as a label: what comes before its first ': '."""
    return error.split(": ", 1)[0][:48] or "unknown"


class _Counts(Collector):
    """A process's own plain counters (a dict it keeps anyway), as Prometheus counters and gauges."""

    def __init__(self, prefix: str, counts: Callable[[], Mapping[str, Any]], gauges: Collection[str]) -> None:
        self.prefix, self.counts, self.gauges = prefix, counts, gauges

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        for key, value in _flat(self.counts()):
            name = f"{self.prefix}_{key}"
            if key in self.gauges:
                yield GaugeMetricFamily(name, key.replace("_", " "), value=value)
            else:
                yield CounterMetricFamily(name, key.replace("_", " "), value=value)


def _flat(counts: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """Numbers, and numbers in nested dicts (their keys joined by `_`); anything else is left out."""
    for key, value in counts.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def counts_registry(prefix: str, counts: Callable[[], Mapping[str, Any]],
                    gauges: Collection[str] = ()) -> CollectorRegistry:
    """The registry of a process that counts in a dict: `prefix_key_total` per counter, gauges as named."""
    registry = CollectorRegistry()
    registry.register(_Counts(prefix, counts, gauges))
    return registry


def counts_renderer(prefix: str, counts: Callable[[], Mapping[str, Any]],
                    gauges: Collection[str] = ()) -> Callable[[], bytes]:
    """/metrics of such a process, as the text Prometheus reads."""
    registry = counts_registry(prefix, counts, gauges)
    return lambda: generate_latest(registry)


class WorkerMetrics:
    def __init__(self, sink_retries: Callable[[], int] | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.events = Counter("qunguard_events", "Producers' events stored, by kind", ["kind"], registry=r)
        self.records = Counter("qunguard_records", "Kafka records taken through detection", registry=r)
        self.findings = Counter("qunguard_findings", "Findings stored, by rule", ["rule"], registry=r)
        self.dead = Counter("qunguard_deadletters", "Dead letters stored, by reason", ["reason"], registry=r)
        self.alerts = Counter("qunguard_alerts", "Alerts published for the notifier", registry=r)
        self.rows = Counter("qunguard_sink_rows", "Rows written to ClickHouse, by table", ["table"], registry=r)
        self.write_seconds = Histogram(
            "qunguard_sink_batch_seconds", "Time of one ClickHouse write of a batch, retries included",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r)
        self.lag = Gauge("qunguard_consumer_lag", "Records in the partition not yet read by this worker",
                         ["topic", "partition"], registry=r)
        self.last_write = Gauge("qunguard_sink_last_write_timestamp_seconds",
                                "When the last ClickHouse write ended (Unix time)", registry=r)
        if sink_retries is not None:  # the sink counts its retried ClickHouse calls itself
            r.register(_Counts("qunguard_sink", lambda: {"errors": sink_retries()}, ()))
        self._lag_labels: set[tuple[str, str]] = set()

    def admitted(self, batch: Any, records: int) -> None:
        """A batch after collection (pipeline.processor.Batch, its rows new to ClickHouse)."""
        self.records.inc(records)
        kinds: dict[str, int] = {}
        for row in batch.rows["raw_events"]:
            kinds[row[KIND]] = kinds.get(row[KIND], 0) + 1
        for kind, n in kinds.items():
            self.events.labels(kind).inc(n)
        for f in batch.findings:
            self.findings.labels(f["rule"]).inc()
        for dl in batch.dead:
            self.dead.labels(reason_class(dl["error"])).inc()
        if batch.alerts:
            self.alerts.inc(len(batch.alerts))

    def written(self, seconds: float, rows: Mapping[str, int]) -> None:
        self.write_seconds.observe(seconds)
        for table, n in rows.items():
            if n:
                self.rows.labels(table).inc(n)
        self.last_write.set(time.time())

    def set_lag(self, highwaters: Mapping[tuple[str, int], int | None],
                position: Callable[[tuple[str, int]], int | None]) -> None:
        """Per owned partition: high watermark − the next offset this worker will read. Partitions
        no longer owned leave the gauge."""
        now: set[tuple[str, str]] = set()
        for tp, high in highwaters.items():
            pos = position(tp)
            if high is None:
                continue
            labels = (tp[0], str(tp[1]))
            self.lag.labels(*labels).set(max(0, high - (pos if pos is not None else 0)))
            now.add(labels)
        for gone in self._lag_labels - now:
            self.lag.remove(*gone)
        self._lag_labels = now

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve(listen: str, render: Callable[[], bytes], health: Health, what: str) -> Any:
    """Serve /metrics and /healthz on `listen` (host:port) in the running loop; returns the runner
    (call `.cleanup()` to stop), or None if the address is taken: the process goes on without."""
    from aiohttp import web

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = health()
        return web.json_response({"status": "ok" if ok else "failing", **detail}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    try:
        await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    except OSError as exc:
        log.warning("%s: metrics and health not served on %s (%s)", what, listen, exc.strerror or exc)
        await runner.cleanup()
        return None
    log.info("%s: metrics on http://%s/metrics, health on /healthz", what, listen)
    return runner
