"""/metrics and /healthz as an operator's Prometheus and compose's health check read them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from pipeline.config import load_config
from pipeline.devtools.devservices import free_port
from pipeline.devtools.simulate import Simulator
from pipeline.metrics import WorkerMetrics, reason_class, serve
from pipeline.processor import Processor
from schemas.rows import Source
from tests.conftest import scrape


def test_a_batch_is_counted_by_kind_rule_and_reason():
    cfg = load_config(env={})
    records = list(Simulator(orgs=1, groups=5, members=8, seed=2).records(2000, malformed=10, envelope=20))
    batch = Processor(cfg).process((r.value, Source("qg.events", 0, i)) for i, r in enumerate(records))
    m = WorkerMetrics(sink_retries=lambda: 3)
    m.admitted(batch, len(records))
    m.written(0.2, {t: len(rows) for t, rows in batch.rows.items()})
    port = free_port()

    async def run() -> dict:
        runner = await serve(f"127.0.0.1:{port}", m.render, lambda: (True, {}), "test")
        try:
            return await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        finally:
            await runner.cleanup()

    got = asyncio.run(run())
    kinds: dict = {}
    for row in batch.rows["raw_events"]:
        kinds[(("kind", row[1]),)] = kinds.get((("kind", row[1]),), 0) + 1
    assert got["qunguard_events_total"] == kinds and sum(kinds.values()) == 2000
    assert sum(got["qunguard_findings_total"].values()) == len(batch.findings) > 0
    assert sum(got["qunguard_deadletters_total"].values()) == len(batch.dead) == 10
    assert got["qunguard_records_total"][()] == len(records)
    assert got["qunguard_sink_errors_total"][()] == 3
    assert got["qunguard_sink_batch_seconds_count"][()] == 1


def test_lag_follows_the_owned_partitions():
    m = WorkerMetrics()
    m.set_lag({("qg.events", 0): 100, ("qg.events", 1): 50}, {("qg.events", 0): 40, ("qg.events", 1): 50}.get)
    text = m.render().decode()
    assert 'qunguard_consumer_lag{partition="0",topic="qg.events"} 60.0' in text
    assert 'qunguard_consumer_lag{partition="1",topic="qg.events"} 0.0' in text
    m.set_lag({("qg.events", 1): 70}, {("qg.events", 1): 50}.get)  # partition 0 went to another worker
    text = m.render().decode()
    assert 'partition="0"' not in text and 'qunguard_consumer_lag{partition="1",topic="qg.events"} 20.0' in text


def test_health_is_503_with_the_reason_when_delivery_stopped_and_a_taken_port_is_no_crash():
    port = free_port()

    async def run() -> tuple[int, dict, object]:
        runner = await serve(f"127.0.0.1:{port}", bytes, lambda: (False, {"error": "delivery stopped: X"}), "t")
        second = await serve(f"127.0.0.1:{port}", bytes, lambda: (True, {}), "t")  # the port is taken

        def get() -> tuple[int, dict]:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())
            raise AssertionError("a stopped worker answered 200")

        try:
            code, body = await asyncio.to_thread(get)
        finally:
            await runner.cleanup()
        return code, body, second

    code, body, second = asyncio.run(run())
    assert (code, body) == (503, {"status": "failing", "error": "delivery stopped: X"}) and second is None


def test_reasons_are_bounded_labels():
    assert reason_class("invalid JSON: unexpected character: line 1 column 1 (char 0)") == "invalid JSON"
    assert reason_class("ts: expected epoch milliseconds") == "ts"
    assert reason_class("detector error: KeyError: 'x'") == "detector error"
    assert reason_class("") == "unknown"


def test_a_bridges_counts_become_counters_and_gauges():
    from pipeline.metrics import counts_renderer

    counts = {"received": 5, "unacknowledged": 2, "enforcement": {"ok": 1, "failed": 3}, "mode": "ws"}
    text = counts_renderer("qunguard_bridge", lambda: counts, gauges=("unacknowledged",))().decode()
    assert "qunguard_bridge_received_total 5.0" in text
    assert "# TYPE qunguard_bridge_unacknowledged gauge" in text and "qunguard_bridge_unacknowledged 2.0" in text
    assert "qunguard_bridge_enforcement_failed_total 3.0" in text and "mode" not in text
