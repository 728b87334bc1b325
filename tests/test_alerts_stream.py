"""Alerts end to end, for real: Kafka → `qunguard worker` → qg.alerts → `qunguard notifier` → local
robots, a webhook and an SMTP server; the delivery records and the worker's alerts in ClickHouse."""

from __future__ import annotations

import json
import re
import time

import orjson
import pytest

from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import START_TS, Record, Simulator
from pipeline.kafka import ensure_topics
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import REPORT, Worker, count, make_config, query, scrape, server_url, unique, wait_for
from tests.robots import Mail, Robots, channels

pytestmark = pytest.mark.slow

FAMILIES = {"content", "conduct", "flood", "deadline", "member", "group", "sanction"}


@pytest.fixture
def robots():
    r = Robots().start()
    yield r
    r.close()


def _setup(tmp_path, kafka, clickhouse, chans: dict, policy: str, **sections):
    pol = tmp_path / "policy.yaml"
    pol.write_text(policy, encoding="utf-8")
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("al")), policy={"file": pol},
                      notifier={"channels": json.dumps(chans), "retry_seconds": 300},
                      worker={"timer_seconds": 1.0}, **sections)
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    return cfg, pol



def _all_sent(cfg, expected: int) -> bool:
    return count(cfg, "SELECT uniqExact(alert_id) FROM {db}.alert_deliveries WHERE status = 'sent'") >= expected


def test_every_rule_family_reaches_every_channel_and_the_stream_sends_replays_alerts(
        tmp_path, kafka, clickhouse, workers, robots):
    mail = Mail(tmp_path)
    try:
        cfg, pol = _setup(tmp_path, kafka, clickhouse, channels(robots, mail),
                          "alerts: {to: [hook, mail, wecom, ding, feishu], min_severity: low}\n")
        records = list(Simulator(orgs=2, groups=16, members=10, seed=81).records(5000, envelope=10, linger_ms=1000))
        # the simulator's members sleep at night; one of them posts at 23:30 (quiet hours)
        late = {"kind": "message", "event_id": "late-1", "org_id": "o", "ts": START_TS + 14 * 3_600_000 + 1_800_000,
                "platform": "wecom", "group_id": "g-late", "msg_id": "late-m1", "sender_id": "night-owl",
                "text": "明天的会议材料我发群里了"}
        records.append(Record(b"g-late", orjson.dumps(late), ["late-1"]))
        lines = [r.value for r in records]
        from pipeline.policy import load_policy

        expected = replay(lines, until=int(time.time() * 1000), policy=load_policy(pol)).alerts
        assert {a["rule"].split(".")[0] for a in expected} == FAMILIES
        ends = produce(cfg, records, show_progress=False)
        workers.append(Worker(cfg, tmp_path / "worker.log"))
        workers.append(Worker(cfg, tmp_path / "notifier.log", "notifier"))
        assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
        # the notifier is killed in the middle of its digests and started again
        wait_for(lambda: count(cfg, "SELECT count() FROM {db}.alert_deliveries WHERE status = 'sent'") > 0,
                 120, "the first deliveries")
        workers[1].kill()
        workers.append(Worker(cfg, tmp_path / "notifier2.log", "notifier"))
        wait_for(lambda: count(cfg, "SELECT uniqExact(alert_id) FROM {db}.alerts") >= len(expected), 120,
                 "the worker's alerts")
        stream = {r[0]: r[1:] for r in query(cfg, "SELECT alert_id, channel, rule, count FROM {db}.alerts")}
        assert stream == {a["alert_id"]: (a["channel"], a["rule"], a["count"]) for a in expected}
        wait_for(lambda: _all_sent(cfg, len(expected)), 240, "every alert delivered")
        hook = {i for r in robots.of("webhook") for i in (a["alert_id"] for a in r.body["alerts"])}
        assert hook == {a["alert_id"] for a in expected if a["channel"] == "hook"}
        # a long header is folded on the wire (RFC 5322): the whitespace it gains is not part of an id
        mailed = {i.strip() for m in mail.messages for i in m["X-Qunguard-Alerts"].split(",")}
        assert mailed == {a["alert_id"] for a in expected if a["channel"] == "mail"}
        copies = sum(len(r.body["alerts"]) for r in robots.of("webhook")) - len(hook)
        for kind, name in (("wecom", "wecom"), ("dingtalk", "ding"), ("feishu", "feishu")):
            assert robots.of(kind), f"{name} received nothing"
        assert not [r for r in robots.refused if r[0] in ("webhook",)]
        latency = query(cfg, "SELECT quantile(0.99)(latency_ms) FROM {db}.alert_deliveries WHERE status = 'sent'")
        REPORT.append(f"alerts: {len(expected)} alerts of every rule family = replay's, delivered to 5 channels "
                      f"across a notifier SIGKILL ({copies} webhook copies, same alert_id); "
                      f"robots {len(robots.of('wecom'))}/{len(robots.of('dingtalk'))}/{len(robots.of('feishu'))} "
                      f"messages; p99 read→answer {latency[0][0]:.0f} ms")
    finally:
        mail.close()


def test_a_channel_down_for_60_seconds_gets_everything_afterwards(tmp_path, kafka, clickhouse, workers, robots):
    cfg, pol = _setup(tmp_path, kafka, clickhouse, channels(robots), "alerts: {to: [hook], min_severity: low}\n")
    records = list(Simulator(orgs=1, groups=8, members=8, seed=82).records(2500, envelope=10, linger_ms=1000))
    from pipeline.policy import load_policy

    lines = [r.value for r in records]
    expected = replay(lines, until=int(time.time() * 1000), policy=load_policy(pol))
    port = robots.port
    robots.stop()
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    workers.append(Worker(cfg, tmp_path / "notifier.log", "notifier"))
    down_at = time.monotonic()
    ends = produce(cfg, records, show_progress=False)
    assert wait_drained(cfg, ends, timeout=180, alive=lambda: workers[0].proc.poll() is None)
    # detection does not wait for the channel
    wait_for(lambda: count(cfg, "SELECT uniqExact(finding_id) FROM {db}.findings") >= len(expected.findings), 60,
             "the findings")
    assert {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings")} == {
        f["finding_id"] for f in expected.findings}
    assert count(cfg, "SELECT count() FROM {db}.alert_deliveries WHERE status = 'sent'") == 0
    time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
    robots.start(port)
    wait_for(lambda: _all_sent(cfg, len(expected.alerts)), 180, "everything delivered once the channel is back")
    got = {a["alert_id"] for r in robots.of("webhook") for a in r.body["alerts"]}
    assert got == {a["alert_id"] for a in expected.alerts}
    retries = count(cfg, "SELECT count() FROM {db}.alert_deliveries WHERE status = 'retry'")
    assert retries > 0 and count(cfg, "SELECT count() FROM {db}.alert_deliveries WHERE status = 'dead'") == 0
    # the notifier's /metrics (notifier.metrics_listen) count the attempts ClickHouse holds
    def same_counts() -> bool:
        m = scrape("http://127.0.0.1:9109/metrics")
        return bool(m) and all(
            m.get(f"qunguard_notifier_attempts_{status}_total", {}).get((), 0) == count(
                cfg, f"SELECT count() FROM {{db}}.alert_deliveries WHERE status = '{status}'")
            for status in ("sent", "retry"))
    wait_for(same_counts, 30, "the notifier's counters as ClickHouse's")
    REPORT.append(f"alerts: webhook down 60 s: {len(got)} alerts delivered afterwards, {retries} retries recorded")


def test_ten_thousand_findings_in_a_minute_stay_within_the_robots_budget(tmp_path, kafka, clickhouse, workers,
                                                                           robots):
    # no ladder here: 2,000 senders posting five times each would add 6,000 sanctions to the 10,000
    cfg, _ = _setup(tmp_path, kafka, clickhouse, channels(robots), "alerts: {to: [wecom]}\nsanctions: {steps: []}\n")
    now = int(time.time() * 1000) - 120_000
    events = [{"kind": "message", "event_id": f"bg{i}", "org_id": "o", "ts": now + i * 6, "platform": "wecom",
               "group_id": "g-busy", "msg_id": f"bm{i}", "sender_id": f"s{i % 2000}",
               "text": f"澳门赌场百家乐，注册就送彩金 {i}"} for i in range(10_000)]
    records = [Record(b"g-busy", orjson.dumps(events[i:i + 100]), [e["event_id"] for e in events[i:i + 100]])
               for i in range(0, len(events), 100)]
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    workers.append(Worker(cfg, tmp_path / "notifier.log", "notifier"))
    start = time.time()
    produce(cfg, records, show_progress=False)
    gambling = "SELECT uniqExact(finding_id) FROM {db}.findings WHERE rule = 'content.gambling'"
    wait_for(lambda: count(cfg, gambling) >= 10_000, 180, "10,000 gambling findings")
    found = {r[0] for r in query(cfg, "SELECT finding_id FROM {db}.findings WHERE rule = 'content.gambling'")}

    def covered() -> set[str]:
        """Findings in an alert a robot took. The notifier reads alerts from the topic, published before
        their rows are written, and the sink writes one table after another: wait for both."""
        return {f for (ids,) in query(cfg, "SELECT finding_ids FROM {db}.alerts WHERE alert_id IN (SELECT alert_id "
                                           "FROM {db}.alert_deliveries WHERE status = 'sent')") for f in ids}

    wait_for(lambda: found <= covered(), 240, "every finding in a delivered alert")
    alerts = count(cfg, "SELECT uniqExact(alert_id) FROM {db}.alerts")
    wait_for(lambda: _all_sent(cfg, alerts), 60, "every alert delivered")
    received = sorted(r.at for r in robots.of("wecom"))
    assert all(sum(1 for t in received if s <= t < s + 60) <= 20 for s in received), "over the robot's budget"
    totals = [int(m.group(1)) for r in robots.of("wecom")
              for m in [re.search(r"共(\d+)条", (r.body.get("markdown") or r.body.get("text"))["content"])] if m]
    REPORT.append(f"alerts: 10,000 gambling findings in one group: {alerts} alerts in {len(received)} robot messages "
                  f"(≤ 20 a minute; digests of up to {max(totals, default=1)}), all delivered "
                  f"{received[-1] - start:.0f} s after the first event was produced")
