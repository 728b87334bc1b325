"""The notifier's delivery against local robots that check keys and signatures as the platforms do,
an SMTP server with STARTTLS and AUTH, and a real ClickHouse for the delivery records."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import orjson
import pytest

from pipeline.alerting.notifier import Notifier
from pipeline.devtools.simulate import Simulator
from pipeline.policy import Policy
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import make_config, server_url, unique
from tests.robots import Mail, Robots, channels

NAMES = ("wecom", "ding", "feishu", "hook", "mail")


@pytest.fixture
def robots():
    r = Robots().start()
    yield r
    r.close()


@pytest.fixture
def mail(tmp_path):
    m = Mail(tmp_path)
    yield m
    m.close()


def _alerts(per_channel: int) -> dict[str, list[dict]]:
    """Real alerts: replay of simulated traffic, routed to every channel."""
    lines = [r.value for r in Simulator(orgs=2, groups=12, members=8, seed=9).records(4000)]
    policy = Policy({"alerts": {"to": list(NAMES)}})
    alerts = replay(lines, until=4_102_000_000_000, policy=policy).alerts
    out = {name: [a for a in alerts if a["channel"] == name][:per_channel] for name in NAMES}
    assert all(len(v) == per_channel for v in out.values())
    return out


def _notifier(tmp_path, clickhouse, chans) -> Notifier:
    cfg = make_config(tmp_path, clickhouse_url=server_url(clickhouse, unique("nt")),
                      notifier={"channels": json.dumps(chans), "retry_seconds": 30, "base_url": "https://qg.test"})
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    return Notifier(cfg, backend)


async def _deliver(notifier: Notifier, alerts: list[dict], until, timeout: float = 60, between=None) -> None:
    records = [(("qg.alerts", 0), i, orjson.dumps(a)) for i, a in enumerate(alerts)]
    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(notifier.channel_loop(n, session)) for n in notifier.outboxes]
        notifier.admit(records, delivered=set())
        deadline = time.monotonic() + timeout
        settled: list = []
        while time.monotonic() < deadline:
            rows, dead, done = notifier.take_settled()
            await asyncio.to_thread(notifier.store, rows, dead)
            settled += done
            for tp, off in done:
                notifier.offsets.settle(tp, off)
            if between is not None:
                between()
            if until(settled):
                break
            await asyncio.sleep(0.2)
        notifier.stopping = True
        for e in notifier.wake.values():
            e.set()
        await asyncio.wait(tasks, timeout=5)


def _attempts(notifier: Notifier) -> list[tuple]:
    db = notifier.backend.database
    return notifier.backend.query(f"SELECT alert_id, channel, status, error, message_id FROM {db}.alert_deliveries")


def test_every_channel_receives_its_alerts_signed_as_the_platform_checks(tmp_path, clickhouse, robots, mail):
    by_channel = _alerts(8)
    alerts = [a for name in NAMES for a in by_channel[name]]
    notifier = _notifier(tmp_path, clickhouse, channels(robots, mail))
    asyncio.run(_deliver(notifier, alerts, until=lambda s: len(s) == len(alerts)))
    attempts = _attempts(notifier)
    sent = {(a, c) for a, c, status, _, _ in attempts if status == "sent"}
    assert sent == {(a["alert_id"], a["channel"]) for a in alerts}, [r for r in attempts if r[2] != "sent"]
    assert notifier.attempts["sent"] == sum(status == "sent" for _, _, status, _, _ in attempts)  # its /metrics
    assert not robots.refused
    # the webhook and the mail carry the alert ids; the robots one message per delivery record
    assert {a["alert_id"] for r in robots.of("webhook") for a in r.body["alerts"]} == {
        a["alert_id"] for a in by_channel["hook"]}
    assert {i.strip() for m in mail.messages for i in m["X-Qunguard-Alerts"].split(",")} == {
        a["alert_id"] for a in by_channel["mail"]}
    assert all(m["Subject"].startswith("[qunguard]") for m in mail.messages)
    for kind, name in (("wecom", "wecom"), ("dingtalk", "ding"), ("feishu", "feishu")):
        messages = {m for _, c, status, _, m in attempts if c == name and status == "sent"}
        assert len(robots.of(kind)) == len(messages) >= 1
    text = robots.of("wecom")[0].body
    content = (text.get("markdown") or text.get("text"))["content"]
    assert "【" in content and "详情：https://qg.test/findings/" in content


def test_a_bad_signature_is_one_configuration_error_and_the_other_channels_go_on(tmp_path, clickhouse, robots,
                                                                                 caplog):
    by_channel = _alerts(5)
    alerts = by_channel["ding"] + by_channel["hook"]
    notifier = _notifier(tmp_path, clickhouse, channels(robots, ding__secret="SECwrong"))
    with caplog.at_level(logging.ERROR, logger="qunguard.notifier"):
        asyncio.run(_deliver(notifier, alerts, until=lambda s: len(s) == len(alerts)))
    attempts = _attempts(notifier)
    assert {a for a, c, s, _, _ in attempts if s == "sent"} == {a["alert_id"] for a in by_channel["hook"]}
    ding = [r for r in attempts if r[1] == "ding"]
    assert {r[2] for r in ding} == {"config_error"}
    assert {r[0] for r in ding} == {a["alert_id"] for a in by_channel["ding"]}
    assert all("310000" in r[3] and "SECwrong" not in r[3] for r in ding)
    # the platform was asked once; the other alerts were not sent into the same refusal
    assert len([r for r in robots.refused if r[0] == "dingtalk"]) == 1
    assert len([r for r in caplog.records if "channel ding" in r.getMessage()]) == 1
    db = notifier.backend.database
    dead = notifier.backend.query(f"SELECT count() FROM {db}.deadletter WHERE error LIKE 'configuration error%'")
    assert dead[0][0] == len(by_channel["ding"])


def test_a_channel_down_gets_everything_once_it_is_back(tmp_path, clickhouse, robots):
    hook = _alerts(6)["hook"]
    notifier = _notifier(tmp_path, clickhouse, channels(robots))
    port = robots.port
    robots.stop()
    back_at = time.monotonic() + 8

    def maybe_back():
        if robots._runner is None and time.monotonic() > back_at:  # noqa: SLF001
            robots.start(port)

    asyncio.run(_deliver(notifier, hook, until=lambda s: len(s) == len(hook), between=maybe_back))
    attempts = _attempts(notifier)
    assert {a for a, _, s, _, _ in attempts if s == "sent"} == {a["alert_id"] for a in hook}
    assert any(s == "retry" for _, _, s, _, _ in attempts)
    assert {a["alert_id"] for r in robots.of("webhook") for a in r.body["alerts"]} == {a["alert_id"] for a in hook}
