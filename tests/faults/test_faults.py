"""The fault tier: what operators see go wrong, done for real to a worker under traffic (Apache Kafka
3.9, ClickHouse 18.16). For each fault the outcome is the same, counted without FINAL: every valid
event stored once, every malformed record a dead letter on the topic and in the table, and the
findings equal to `qunguard replay`'s, finding for finding."""

from __future__ import annotations

import gzip
import signal
import threading
import time
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.config import Config
from pipeline.devtools import devservices
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import START_TS, Record, Simulator
from pipeline.kafka import bootstrap, ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import REPORT, Worker, count, make_config, onebot_actions, scrape, server_url, unique, wait_for


def _setup(tmp_path: Path, kafka_url: str, clickhouse_url: str) -> Config:
    cfg = make_config(tmp_path, kafka_url, clickhouse_url, sink={"batch_rows": 1000, "batch_seconds": 0.3},
                      worker={"timer_seconds": 1, "timer_grace_seconds": 2})
    ensure_topics(cfg)
    backend = connect(clickhouse_url)
    migrate(backend)
    backend.close()
    return cfg


def _traffic(seed: int, events: int = 8000) -> list[Record]:
    """Envelopes as a bridge sends them: a group's events within a second of event time (less than
    the timers' grace, so the worker's timers may fire while the producer still sends)."""
    sim = Simulator(orgs=2, groups=40, members=10, seed=seed)
    return list(sim.records(events, malformed=30, envelope=10, linger_ms=1000))


def _expected(records: list[Record], extra_lines: list[bytes] = ()):
    lines = [r.value for r in records] + list(extra_lines)
    return replay(lines, until=int(time.time() * 1000))




def _landed(cfg: Config, expected, dead: int, timeout: float = 120) -> dict:
    """Every promise, checked on ClickHouse and on the dead-letter topic; returns figures."""
    try:
        wait_for(lambda: count(cfg, "SELECT uniqExact(finding_id) FROM {db}.findings") >= len(expected.findings),
                 timeout, "the findings (timers included)")
        # verdicts come after their findings (a forward to the ladder, then its tick): wait for them too
        wait_for(lambda: count(cfg, "SELECT count() FROM {db}.finding_status")
                 >= sum(map(len, expected.statuses.values())), timeout, "the review history")
    except AssertionError:
        pass  # the comparison below says which differ
    backend = connect(cfg.clickhouse.url)
    db = backend.database
    try:
        rows, distinct = backend.query(f"SELECT count(), uniqExact(event_id) FROM {db}.raw_events")[0]
        assert (rows, distinct) == (expected.events, expected.events), "every valid event once (no FINAL)"
        f_rows, f_distinct = backend.query(f"SELECT count(), uniqExact(finding_id) FROM {db}.findings")[0]
        assert f_rows == f_distinct, f"{f_rows - f_distinct} finding rows stored twice"
        got = {r[0]: r[1:] for r in backend.query(
            f"SELECT finding_id, rule, group_id, msg_id, user_id FROM {db}.findings")}
        want = {f["finding_id"]: (f["rule"], f["group_id"], f["msg_id"], f["user_id"]) for f in expected.findings}
        assert set(got) == set(want), ("the findings are replay's", sorted(got[k] for k in set(got) - set(want)),
                                       sorted(want[k] for k in set(want) - set(got)))
        stored = set(got)
        statuses = backend.query(f"SELECT finding_id, seq, status FROM {db}.finding_status")
        assert len(statuses) == len(set(statuses)), "a verdict stored twice"
        assert set(statuses) == {(fid, r["seq"], r["status"]) for fid, h in expected.statuses.items() for r in h}, \
            "the review history is replay's"
        d_rows, d_distinct = backend.query(f"SELECT count(), uniqExact(dl_id) FROM {db}.deadletter")[0]
        assert d_rows == d_distinct == dead, "every malformed record one dead letter"
        table_dead = {r[0] for r in backend.query(f"SELECT dl_id FROM {db}.deadletter")}
    finally:
        backend.close()
    consumer = KafkaConsumer(cfg.topic("deadletter"), bootstrap_servers=bootstrap(cfg.kafka.url),
                             auto_offset_reset="earliest", consumer_timeout_ms=4000, group_id=unique("dl"),
                             fetch_max_bytes=16 << 20, max_partition_fetch_bytes=16 << 20)
    topic_dead = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert {d["dl_id"] for d in topic_dead} == table_dead, "the dead letters are on the topic too"
    findings = KafkaConsumer(cfg.topic("findings"), bootstrap_servers=bootstrap(cfg.kafka.url),
                             auto_offset_reset="earliest", consumer_timeout_ms=4000, group_id=unique("fc"))
    published = [orjson.loads(m.value)["finding_id"] for m in findings]
    findings.close()
    assert set(published) >= stored, "every finding published"
    return {"findings": len(stored), "copies": len(published) - len(set(published)), "dead": topic_dead}


def _produce_in_background(cfg: Config, records: list[Record], rate: float) -> tuple[threading.Thread, dict]:
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(ends=produce(cfg, records, rate=rate, show_progress=False)))
    t.start()
    return t, result


def _rows(cfg: Config) -> int:
    try:
        return count(cfg, "SELECT count() FROM {db}.raw_events")
    except Exception:  # noqa: BLE001 -- ClickHouse down in the outage test
        return 0


def test_sigkill_three_times_during_traffic(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka.url, server_url(clickhouse, unique("kill3")))
    records = _traffic(seed=61, events=12_000)
    expected = _expected(records)
    producer, result = _produce_in_background(cfg, records, rate=1500)
    seen = 0
    for i in range(3):
        workers.append(Worker(cfg, tmp_path / f"w{i}.log"))
        seen = wait_for(lambda s=seen: (n := _rows(cfg)) > s + 1500 and n, 120, "rows after a restart")
        workers[-1].kill()  # SIGKILL: in the middle of whatever it was doing
    workers.append(Worker(cfg, tmp_path / "w3.log"))
    producer.join()
    assert wait_drained(cfg, result["ends"], timeout=180, alive=lambda: workers[-1].proc.poll() is None)
    figures = _landed(cfg, expected, dead=sum(r.malformed for r in records))
    REPORT.append(f"faults: 3 SIGKILLs, {expected.events} events, {figures['findings']} findings = replay's; "
                  f"{figures['copies']} copies on qg.findings")


def test_one_of_two_workers_killed(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka.url, server_url(clickhouse, unique("kill1of2")))
    records = _traffic(seed=62, events=10_000)
    expected = _expected(records)
    workers.append(Worker(cfg, tmp_path / "a.log"))
    workers.append(Worker(cfg, tmp_path / "b.log"))
    producer, result = _produce_in_background(cfg, records, rate=1500)
    wait_for(lambda: _rows(cfg) > 3000, 120, "both working")
    workers[0].kill()
    producer.join()
    assert wait_drained(cfg, result["ends"], timeout=180, alive=lambda: workers[1].proc.poll() is None)
    _landed(cfg, expected, dead=sum(r.malformed for r in records))


def test_sigterm_while_busy_exits_within_seconds(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka.url, server_url(clickhouse, unique("term")))
    records = _traffic(seed=63, events=10_000)
    expected = _expected(records)
    ends = produce(cfg, records, show_progress=False)  # a backlog: the worker is busy from the start
    workers.append(Worker(cfg, tmp_path / "a.log"))
    wait_for(lambda: _rows(cfg) > 2000, 120, "busy")
    t = time.monotonic()
    workers[0].proc.send_signal(signal.SIGTERM)
    workers[0].proc.wait(30)
    took = time.monotonic() - t
    assert took < 15, f"SIGTERM took {took:.1f}s"
    workers.append(Worker(cfg, tmp_path / "b.log"))
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[1].proc.poll() is None)
    _landed(cfg, expected, dead=sum(r.malformed for r in records))
    REPORT.append(f"faults: SIGTERM on a busy worker exited in {took:.1f}s")


def _health(port: int) -> tuple[int, dict] | None:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return None


def test_clickhouse_down_for_45_seconds(tmp_path, kafka, workers):
    ch = devservices.start_clickhouse(tmp_path / "ch")
    port = int(ch.url.rsplit(":", 1)[1].split("/")[0])
    cfg = _setup(tmp_path, kafka.url, server_url(ch, "outage"))
    records = _traffic(seed=64, events=10_000)
    expected = _expected(records)
    workers.append(Worker(cfg, tmp_path / "a.log"))
    producer, result = _produce_in_background(cfg, records, rate=1000)
    wait_for(lambda: _rows(cfg) > 2000, 120, "rows before the outage")
    ch.stop()
    began = time.monotonic()
    # While it is down the worker is healthy (a restart would not help) and says what it meets
    health = wait_for(lambda: (h := _health(9108)) and h[1].get("sink_retries", 0) > 0 and h, 40,
                      "the worker's health to show the retries")
    assert health[0] == 200 and health[1]["status"] == "ok", health
    assert scrape("http://127.0.0.1:9108/metrics")["qunguard_sink_errors_total"][()] > 0
    time.sleep(max(0.0, 45 - (time.monotonic() - began)))
    ch = devservices.start_clickhouse(tmp_path / "ch", port=port)
    try:
        producer.join()
        assert wait_drained(cfg, result["ends"], timeout=240, alive=lambda: workers[0].proc.poll() is None)
        _landed(cfg, expected, dead=sum(r.malformed for r in records))
        # and a worker stopped while ClickHouse is down stops too
        ch.stop()
        t = time.monotonic()
        workers[0].proc.send_signal(signal.SIGTERM)
        workers[0].proc.wait(40)
        REPORT.append(f"faults: ClickHouse down 45 s, nothing lost; SIGTERM with it down: "
                      f"{time.monotonic() - t:.1f}s")
    finally:
        ch.stop()


def test_broker_restarted_during_traffic(tmp_path, clickhouse, workers):
    broker = devservices.start_kafka(tmp_path / "kafka")
    port = broker.extra["port"]
    try:
        cfg = _setup(tmp_path, broker.url, server_url(clickhouse, unique("broker")))
        records = _traffic(seed=65, events=8000)
        expected = _expected(records)
        workers.append(Worker(cfg, tmp_path / "a.log"))
        half = len(records) // 2
        ends = produce(cfg, records[:half], show_progress=False)
        wait_for(lambda: _rows(cfg) > 1000, 120, "rows before the restart")
        broker.stop()
        time.sleep(5)
        broker = devservices.start_kafka(tmp_path / "kafka", port=port)
        more = produce(cfg, records[half:], show_progress=False)
        ends = {p: max(ends.get(p, 0), more.get(p, 0)) for p in set(ends) | set(more)}
        # A worker that could not store what it had taken before the broker's rebalance stops (its
        # memory is ahead of storage); a supervisor starts it again, as compose and systemd do.
        restarts = 0
        while not wait_drained(cfg, ends, timeout=180, alive=lambda: workers[-1].proc.poll() is None):
            assert workers[-1].proc.poll() is not None and restarts < 3, "drained neither alive nor restarted"
            restarts += 1
            workers.append(Worker(cfg, tmp_path / f"a{restarts}.log"))
        _landed(cfg, expected, dead=sum(r.malformed for r in records), timeout=180)
        lines = sum(len(p.read_text().splitlines()) for p in tmp_path.glob("a*.log"))
        REPORT.append(f"faults: broker restart: {restarts} worker restart(s), {lines} log lines in all")
    finally:
        broker.stop()


def test_poison_records_are_dead_letters_and_lose_nobody(tmp_path, kafka, clickhouse, workers):
    cfg = _setup(tmp_path, kafka.url, server_url(clickhouse, unique("poison")))
    traffic = _traffic(seed=66, events=6000)
    before, after = traffic[:len(traffic) // 2], traffic[len(traffic) // 2:]
    base = {"kind": "message", "org_id": "o", "ts": START_TS, "platform": "qq", "group_id": "gp",
            "sender_id": "u"}
    poison = [
        # 759 bytes, nested 300 deep: orjson reads 1,024 levels but writes only 254
        b'{"kind":"message","event_id":"deep","org_id":"o","ts":%d,"platform":"qq","group_id":"gp",'
        b'"msg_id":"deep","sender_id":"u","text":"hi","nested":%s"x"%s}' % (START_TS, b"[" * 300, b"]" * 300),
        orjson.dumps({**base, "event_id": "huge", "msg_id": "huge", "text": "刷" * 1_700_000}),  # 5 MB
        b"\xff\xfe" * 1_750_000,  # 3.5 MB of invalid UTF-8
    ]
    envelope = [{"kind": "group", "event_id": f"env-{i}", "org_id": "o", "ts": START_TS + i, "group_id": "genv",
                 "action": "update", "name": "大信封"} for i in range(100_000)]
    poison.append(orjson.dumps(envelope))
    expected = _expected(before + after, poison)
    produce(cfg, before, show_progress=False)
    big = KafkaProducer(bootstrap_servers=bootstrap(cfg.kafka.url), compression_type="gzip",
                        max_request_size=16 << 20, acks="all")
    for value in poison:
        assert len(gzip.compress(value)) < 4 << 20
        big.send(cfg.topic("events"), key=b"gp", value=value)
    big.flush()
    big.close()
    produce(cfg, after, show_progress=False)
    workers.append(Worker(cfg, tmp_path / "a.log"))
    # every partition, including the one the poison went to, is read to its end
    consumer = KafkaConsumer(bootstrap_servers=bootstrap(cfg.kafka.url))
    tps = [TopicPartition(cfg.topic("events"), p) for p in range(cfg.kafka.partitions)]
    ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    consumer.close()
    assert wait_drained(cfg, ends, timeout=240, alive=lambda: workers[0].proc.poll() is None), \
        (tmp_path / "a.log").read_text()[-3000:]
    figures = _landed(cfg, expected, dead=sum(r.malformed for r in before + after) + 3, timeout=180)
    errors = [d["error"] for d in figures["dead"]]
    # On the topic, a dead letter carries at most 64 KiB of the original, with its size and hash
    huge = [d for d in figures["dead"] if d["raw_size"] > 3_000_000]
    assert len(huge) == 2 and all(d["truncated"] and len(d["raw"]) <= 64 * 1024 and len(d["raw_sha256"]) == 64
                                  for d in huge)
    assert any("unknown fields cannot be stored" in e for e in errors), errors
    assert "Traceback" not in (tmp_path / "a.log").read_text()



def _sanction(rule: str, group: str, user: str, strikes: list[str]) -> dict:
    """A `sanction.*` finding as the worker publishes it on qg.findings: its strikes name the messages."""
    return {"finding_id": f"{rule}-{group}-{user}", "rule": rule, "severity": "high", "org_id": "qqorg",
            "group_id": group, "user_id": user, "msg_id": strikes[-1], "ts": int(time.time() * 1000),
            "evidence": {"mute_hours": 1, "strikes": [{"finding_id": f"f{m}", "rule": "content.gambling",
                                                       "msg_id": m, "status": "open"} for m in strikes]}}


def test_clickhouse_down_while_a_sanction_waits_then_carried_out_once(tmp_path, kafka, workers):
    """The bridge's enforcer meets ClickHouse down (it cannot see what was done): it says so, keeps
    the sanction uncommitted, and carries it out once ClickHouse is back; the removal that follows
    recalls no message the mute already recalled, and nothing is done twice."""
    import asyncio

    from aiohttp import ClientSession

    from pipeline.devtools.devservices import free_port, wait_port

    ch = devservices.start_clickhouse(tmp_path / "ch")
    ch_port = int(ch.url.rsplit(":", 1)[1].split("/")[0])
    port = free_port()
    policy = tmp_path / "policy.yaml"
    policy.write_text("groups:\n  '4242': {enforcement: {enabled: true}}\n", encoding="utf-8")
    cfg = make_config(tmp_path, kafka.url, server_url(ch, "enforce"), bridge={"org_id": "qqorg",
                      "onebot_listen": f"127.0.0.1:{port}"}, policy={"file": str(policy)})
    ensure_topics(cfg)
    log = tmp_path / "bridge.log"
    workers.append(Worker(cfg, log, ["bridge", "onebot"]))
    wait_port(port, 30, workers[0].proc, "bridge")
    wait_for(lambda: b"enforcement: on" in log.read_bytes(), 30, "the enforcer")
    time.sleep(4)  # its consumer joins and pins its start (the topic's end) before the first sanction
    producer = KafkaProducer(bootstrap_servers=bootstrap(cfg.kafka.url))
    received: list[dict] = []
    servers = [ch]

    def publish(finding: dict) -> None:
        producer.send(cfg.topic("findings"), orjson.dumps(finding), key=b"4242").get(30)

    async def implementation() -> None:
        async with ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/onebot/v11/ws", headers={"X-Self-ID": "1"})
            ch.stop()
            publish(_sanction("sanction.mute", "4242", "777", ["5001", "5002"]))
            await asyncio.to_thread(wait_for, lambda: b"enforcement interrupted" in log.read_bytes(), 60,
                                    "the enforcer to say ClickHouse is away")
            assert received == []  # nothing done while it cannot tell what was done before
            await asyncio.sleep(8)
            servers.append(await asyncio.to_thread(devservices.start_clickhouse, tmp_path / "ch", port=ch_port))
            removal_sent = False
            async for action in onebot_actions(ws, 120, 8):
                if action is None:
                    if any(a["action"] == "set_group_kick" for a in received):
                        break
                    if not removal_sent and any(a["action"] == "set_group_ban" for a in received):
                        publish(_sanction("sanction.remove", "4242", "777", ["5001", "5002", "5003"]))
                        removal_sent = True
                    continue
                received.append(action)
                await ws.send_json({"status": "ok", "retcode": 0, "data": None, "echo": action["echo"]})
            await ws.close()

    try:
        asyncio.run(implementation())
        done = [(a["action"], a["params"].get("message_id")) for a in received]
        assert sorted(done) == [("delete_msg", 5001), ("delete_msg", 5002), ("delete_msg", 5003),
                                ("set_group_ban", None), ("set_group_kick", None)], done
        rows = wait_for(lambda: len(r := _actions(cfg)) >= 5 and r, 60, "the actions stored")
        assert sorted(rows) == sorted((a, "ok") for a, _ in done), rows
        REPORT.append("faults: enforcer with ClickHouse down: the sanction waited and was carried out once")
    finally:
        producer.close()
        for server in servers:
            server.stop()


def _actions(cfg: Config) -> list[tuple]:
    backend = connect(cfg.clickhouse.url)
    try:
        return backend.query(f"SELECT action, status FROM {backend.database}.sanction_actions")
    finally:
        backend.close()
