"""A deadline that passes while the worker is down fires once when it is back: real Apache Kafka,
Debian's ClickHouse, `qunguard worker` killed with SIGKILL and restarted, timers on the wall clock."""

from __future__ import annotations

import itertools
import time

import orjson
import pytest
from kafka import KafkaConsumer

from pipeline.alerting import render
from pipeline.devtools.produce import produce
from pipeline.devtools.simulate import Record
from pipeline.kafka import bootstrap, ensure_topics
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import Worker, count, make_config, server_url, unique, wait_for

pytestmark = pytest.mark.slow

_n = itertools.count(1)


def event(kind: str, ts: int, **fields) -> dict:
    n = next(_n)
    base = {"kind": kind, "event_id": f"de{n}", "org_id": "o", "ts": ts, "group_id": "g-notice"}
    if kind == "message":
        base.update(platform="wecom", msg_id=f"dm{n}")
    return {**base, **fields}


def send(cfg, events: list[dict]) -> None:
    produce(cfg, [Record(b"g-notice", orjson.dumps(e), [e["event_id"]]) for e in events], show_progress=False)


# The members here join with no roster behind them, so the membership rules have their say too.
DEADLINE_FINDINGS = "SELECT count() FROM {db}.findings WHERE rule LIKE 'deadline.%'"


def test_an_overdue_notice_is_reported_once_across_restarts(tmp_path, kafka, clickhouse, workers):
    policy = tmp_path / "policy.yaml"
    # overdue answers are low severity: the owner asks for their reminders with a route of its own
    policy.write_text("alerts: {to: [owner], group_wait_seconds: 0, routes: [{to: [owner], rules: [deadline.*], "
                      "min_severity: low}]}\n", encoding="utf-8")
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("deadline")),
                      sink={"batch_rows": 50, "batch_seconds": 0.2},
                      worker={"timer_seconds": 1.0, "timer_grace_seconds": 0}, policy={"file": policy},
                      notifier={"channels": '{"owner": {"type": "webhook", "url": "http://127.0.0.1:9/owner"}}'})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    now = int(time.time() * 1000)
    members = [event("member", now - 600_000, user_id=u, action="join", nickname=name, role=role)
               for u, name, role in [("boss", "办公室-王主任", "owner"), ("a", "财务部-李娜", "member"),
                                     ("b", "技术中心-张伟", "member"), ("c", "市场部-刘洋", "member")]]
    # Due a minute after it was posted: about 12 s from now.
    notice = event("message", now - 48_000, sender_id="boss", text="请大家1分钟内在群里回复收到", mentions=["@all"])
    answer = event("message", now - 40_000, sender_id="a", text="收到")
    workers.append(Worker(cfg, tmp_path / "w1.log"))
    send(cfg, members + [notice, answer])
    wait_for(lambda: count(cfg, "SELECT count() FROM {db}.responses") == 1, 120, "the answer stored")
    workers[0].kill()  # down before the deadline

    due = notice["ts"] + 60_000
    time.sleep(max(0.0, (due - time.time() * 1000) / 1000) + 1)
    assert count(cfg, DEADLINE_FINDINGS) == 0, "nothing fired while the worker was down"
    workers.append(Worker(cfg, tmp_path / "w2.log"))
    overdue = "SELECT count() FROM {db}.findings WHERE rule = 'deadline.overdue'"
    wait_for(lambda: count(cfg, overdue) >= 2, 120, "the overdue findings")
    backend = connect(cfg.clickhouse.url)
    rows = backend.query(f"SELECT user_id, ts, msg_id FROM {backend.database}.findings "
                         "WHERE rule LIKE 'deadline.%' ORDER BY user_id")
    backend.close()
    assert rows == [("b", due, notice["msg_id"]), ("c", due, notice["msg_id"])]

    # Restarted again after firing: the state remembers, nothing fires twice.
    workers[1].kill()
    workers.append(Worker(cfg, tmp_path / "w3.log"))
    time.sleep(12)
    assert workers[2].proc.poll() is None
    assert count(cfg, DEADLINE_FINDINGS) == 2

    # One reminder for the owner, naming who has not answered (点名).
    def reminders() -> list[dict]:
        consumer = KafkaConsumer(cfg.topic("alerts"), bootstrap_servers=bootstrap(cfg.kafka.url),
                                 auto_offset_reset="earliest", consumer_timeout_ms=3000, group_id=unique("alerts"))
        found = [a for m in consumer if (a := orjson.loads(m.value))["rule"] == "deadline.overdue"]
        consumer.close()
        return found

    alerts = wait_for(reminders, 60, "the owner's reminder")
    assert len({a["alert_id"] for a in alerts}) == 1
    assert [f["evidence"]["name"] for f in alerts[0]["findings"]] == ["技术中心-张伟", "市场部-刘洋"]
    assert "技术中心-张伟(b)、市场部-刘洋(c)" in render.text(alerts[:1], {})
