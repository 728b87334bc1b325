"""End to end, for real: simulated events with malformed ones among them → Kafka → Faust workers →
ClickHouse. Afterwards ClickHouse holds every valid event exactly once with its tokens and every
malformed record is a dead letter with its reason — also across a SIGKILL and with two workers.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.devtools.devservices import free_port
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import Simulator
from pipeline.kafka import ProgressBoard, bootstrap, committed_offsets, ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import Worker, count, make_config, query, scrape, server_url, unique, wait_for

pytestmark = pytest.mark.slow

EVENTS = 20_000
MALFORMED = 240


def _records(seed: int = 11):
    sim = Simulator(orgs=3, groups=60, members=14, seed=seed)
    # Half the records as single events, half as envelopes: both paths carry real traffic.
    records = list(sim.records(EVENTS // 2, malformed=MALFORMED // 2, envelope=1))
    records += list(Simulator(orgs=2, groups=40, members=10, seed=seed + 1).records(
        EVENTS // 2, malformed=MALFORMED // 2, envelope=25))
    valid = [i for r in records for i in r.valid_ids]
    malformed = sum(r.malformed for r in records)
    messages = {orjson.loads(v)["event_id"] for r in records if r.valid_ids
                for v in ([r.value] if r.value[:1] == b"{" else [orjson.dumps(e) for e in orjson.loads(r.value)])
                if orjson.loads(v)["kind"] == "message"}
    assert len(valid) == len(set(valid)) >= EVENTS and malformed == MALFORMED
    return records, valid, malformed, messages


def _assert_landed(cfg, valid, malformed, messages):
    backend = connect(cfg.clickhouse.url)
    db = backend.database
    try:
        total, distinct = backend.query(f"SELECT count(), uniqExact(event_id) FROM {db}.raw_events")[0]
        assert (total, distinct) == (len(valid), len(valid)), "every valid event exactly once"
        stored = {r[0] for r in backend.query(f"SELECT event_id FROM {db}.raw_events")}
        assert stored == set(valid)
        m_total, m_distinct, with_tokens = backend.query(
            f"SELECT count(), uniqExact(event_id), countIf(notEmpty(tokens) OR text = '') FROM {db}.messages")[0]
        assert m_total == m_distinct == with_tokens == len(messages)
        dead = backend.query(f"SELECT error, raw_encoding, src_offset FROM {db}.deadletter")
        assert len(dead) == malformed, "every malformed record is a dead letter"
        assert all(err for err, _, _ in dead)
        errors = " | ".join(e for e, _, _ in dead)
        for reason in ("invalid JSON", "expected epoch milliseconds", "missing", "over the limit",
                       "is not one of", "expected a list of strings", "expected a JSON object"):
            assert reason in errors
        assert any(enc == "base64" for _, enc, _ in dead), "invalid UTF-8 kept as base64"
    finally:
        backend.close()


def _setup(tmp_path, kafka, clickhouse_url, worker=None, **sink):
    cfg = make_config(tmp_path, kafka.url, clickhouse_url, sink=sink or {"batch_rows": 2000, "batch_seconds": 0.5},
                      worker=worker or {})
    ensure_topics(cfg)
    if not clickhouse_url.startswith("chdb:"):
        backend = connect(clickhouse_url)
        migrate(backend)
        backend.close()
    return cfg


def test_every_event_once_and_every_malformed_in_dead_letters(tmp_path, kafka, clickhouse, workers):
    port = free_port()
    cfg = _setup(tmp_path, kafka, server_url(clickhouse, unique("e2e")), worker={"metrics_listen": f"127.0.0.1:{port}"})
    records, valid, malformed, messages = _records()
    ends = produce(cfg, records, show_progress=False)
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None), \
        (tmp_path / "worker.log").read_text()[-3000:]
    _assert_landed(cfg, valid, malformed, messages)
    # What an operator's Prometheus sees agrees with ClickHouse; the lag is 0 once all is read.
    metrics = lambda: scrape(f"http://127.0.0.1:{port}/metrics")  # noqa: E731
    m = wait_for(lambda: (m := metrics()) and all(v == 0 for v in m["qunguard_consumer_lag"].values())
                 and len(m["qunguard_consumer_lag"]) == 4 and m, 60, "the lag of all 4 partitions at 0")
    assert sum(m["qunguard_events_total"].values()) == len(valid)
    assert sum(m["qunguard_deadletters_total"].values()) == malformed
    assert m["qunguard_deadletters_total"][(("reason", "invalid JSON"),)] > 0
    def same_findings() -> bool:  # a timer may store more between the two reads
        by_rule = {(("rule", r),): float(n) for r, n in query(cfg, "SELECT rule, count() FROM {db}.findings "
                                                                   "GROUP BY rule")}
        return bool(by_rule) and metrics()["qunguard_findings_total"] == by_rule
    wait_for(same_findings, 30, "the findings by rule in /metrics as in ClickHouse")
    assert m["qunguard_sink_rows_total"][(("table", "raw_events"),)] == len(valid)
    assert m["qunguard_sink_batch_seconds_count"][()] >= 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        health = json.loads(r.read())
    assert r.status == 200 and health["status"] == "ok" and health["partitions"] == [0, 1, 2, 3]
    # The dead letters are on their topic too, with the reason and the source position.
    consumer = KafkaConsumer(cfg.topic("deadletter"), bootstrap_servers=bootstrap(cfg.kafka.url),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000, group_id=unique("dlcheck"))
    topic_dead = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert len({d["dl_id"] for d in topic_dead}) == malformed
    assert all(d["error"] and d["src_topic"] == cfg.topic("events") for d in topic_dead)


def test_sigkill_in_the_middle_loses_nothing_and_stores_nothing_twice(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka, server_url(clickhouse, unique("kill")), batch_rows=500, batch_seconds=0.3)
    records, valid, malformed, messages = _records(seed=21)
    result: dict = {}
    # Traffic keeps arriving while the worker dies and comes back.
    producer = threading.Thread(target=lambda: result.update(ends=produce(cfg, records, rate=2500,
                                                                            show_progress=False)))
    producer.start()
    workers.append(Worker(cfg, tmp_path / "worker1.log"))
    stored = wait_for(lambda: count(cfg, "SELECT count() FROM {db}.raw_events") >= 4000 and
                      count(cfg, "SELECT count() FROM {db}.raw_events"), 120, "the first rows")
    workers[0].kill()  # SIGKILL: no shutdown, no final commit
    assert stored < len(valid), "killed in the middle"
    workers.append(Worker(cfg, tmp_path / "worker2.log"))
    producer.join()
    assert wait_drained(cfg, result["ends"], timeout=180, alive=lambda: workers[1].proc.poll() is None)
    _assert_landed(cfg, valid, malformed, messages)


def test_two_workers_share_the_partitions(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka, server_url(clickhouse, unique("two")))
    records, valid, malformed, messages = _records(seed=31)
    workers.append(Worker(cfg, tmp_path / "w1.log"))
    workers.append(Worker(cfg, tmp_path / "w2.log"))
    ends = produce(cfg, records, rate=4000, show_progress=False)
    assert wait_drained(cfg, ends, timeout=180)
    _assert_landed(cfg, valid, malformed, messages)
    # Both workers really worked: all partitions were read, each worker received records.
    backend = connect(cfg.clickhouse.url)
    parts = backend.query(f"SELECT uniqExact(src_partition) FROM {backend.database}.raw_events")[0][0]
    backend.close()
    assert parts == cfg.kafka.partitions
    for w in workers:
        # The delivery path logs each write with the records it stored.
        assert "stored: records=" in w.log.read_text(), f"{w.log.name} stored no records"


def test_chdb_backend_end_to_end(tmp_path, kafka, workers):
    cfg = _setup(tmp_path, kafka, f"chdb:{tmp_path / 'chdb'}")
    records, valid, malformed, messages = _records(seed=41)
    ends = produce(cfg, records, show_progress=False)
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
    workers[0].stop()  # chDB is one process at a time: read after the worker has let go
    _assert_landed(cfg, valid, malformed, messages)


def test_streaming_worker_and_replay_agree_finding_for_finding(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka, server_url(clickhouse, unique("agree")))
    sim = Simulator(orgs=2, groups=30, members=12, seed=51)
    records = list(sim.records(8_000, malformed=20, envelope=10))
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(r.value for r in records) + b"\n")
    # The worker's timers run on the wall clock once it has caught up; replay's clock is --until.
    expected = replay(open(lines, "rb"), until=int(time.time() * 1000)).findings
    rules = {f["rule"] for f in expected}
    assert {"flood.repeat", "flood.rate", "deadline.overdue", "deadline.escalated"} <= rules and len(rules) >= 8
    ends = produce(cfg, records, show_progress=False)
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.findings") >= len(expected), 60, "the timers' findings")
    backend = connect(cfg.clickhouse.url)
    stored = backend.query(f"SELECT finding_id, rule, msg_id, user_id, ts, evidence FROM {backend.database}.findings")
    backend.close()
    assert len(stored) == len({r[0] for r in stored}), "each finding once"
    streamed = {fid: (rule, msg, user, ts, orjson.loads(ev)) for fid, rule, msg, user, ts, ev in stored}
    replayed = {f["finding_id"]: (f["rule"], f["msg_id"], f["user_id"], f["ts"], f["evidence"]) for f in expected}
    assert streamed == replayed
    # The progress the member stage waits on (pipeline/delivery/settled.py), as Kafka holds it: per
    # partition the worker's committed offset and the latest event time stored from it.
    backend = connect(cfg.clickhouse.url)
    latest = dict(backend.query(f"SELECT src_partition, max(ts) FROM {backend.database}.raw_events "
                                "GROUP BY src_partition"))
    backend.close()
    board = ProgressBoard(cfg, f"{cfg.worker.app_id}-progress")

    def quiet():
        """Progress and commits once the worker is idle (its timers forward strikes and alerts for a
        while after the input is stored: those records are committed too)."""
        progress, ends, _ = board.read(cfg.topic("events"), list(range(cfg.kafka.partitions)))
        committed = committed_offsets(cfg, cfg.worker.app_id, [(cfg.topic("events"), p) for p in ends])
        done = all(committed[(cfg.topic("events"), p)] == ends[p] == (progress[p].offset if p in progress else -1)
                   for p in latest)
        return (progress, ends, committed) if done else None

    progress, ends, committed = wait_for(quiet, 60, "the worker idle", interval=2)
    board.close()
    assert {p: (g.offset, g.event_time) for p, g in progress.items()} == {
        p: (committed[(cfg.topic("events"), p)], latest[p]) for p in latest}
    assert all(progress[p].offset == ends[p] for p in latest)


def test_a_new_owner_brings_the_progress_board_up_to_the_commit(tmp_path, kafka):
    """A worker killed between its commit and its progress record: the board says offset 3 (with its
    event time), the workers committed 7 of 7. The next owner records progress at the commit when it
    is assigned (agents/app.py Ports.start_offsets): the event time is kept, the board never goes
    back, and the stages fed by forwards no longer wait for records that are stored already."""
    from kafka import KafkaProducer

    from pipeline.delivery.settled import settled

    cfg = make_config(tmp_path, kafka.url)
    ensure_topics(cfg)
    topic = cfg.topic("events")
    producer = KafkaProducer(bootstrap_servers=bootstrap(cfg.kafka.url))
    for _ in range(7):
        producer.send(topic, b"{}", partition=0)
    producer.flush()
    producer.close()
    dead = ProgressBoard(cfg, f"{cfg.worker.app_id}-progress")
    dead.record({(topic, 0): 3}, {(topic, 0): 1_793_498_400_000})
    dead.close()
    reader = ProgressBoard(cfg, f"{cfg.worker.app_id}-progress")
    progress, ends, starts = reader.read(topic, [0])
    reader.close()
    assert settled(progress, ends, starts, 10_000) == 1_793_498_400_000 - 10_000, "held back by 4 records"
    owner = ProgressBoard(cfg, f"{cfg.worker.app_id}-progress")  # a new process: nothing known yet
    owner.catch_up({(topic, 0): 7})
    owner.catch_up({(topic, 0): 5})  # an older commit read late: no step back
    progress, ends, starts = owner.read(topic, [0])
    owner.close()
    assert (progress[0].offset, progress[0].event_time, ends[0]) == (7, 1_793_498_400_000, 7)
    assert settled(progress, ends, starts, 10_000) is None, "nothing left to store holds nobody back"
