"""Alerts without a network: routing, the alert stage's grouping in event time, replay's alerts,
the messages a person reads, each platform's request and reply, and a channel's outbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import subprocess
import sys
import urllib.parse
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from pipeline.alerting import render
from pipeline.alerting.budget import Budget
from pipeline.alerting.channels import Reply, classify, request
from pipeline.alerting.notifier import Redact
from pipeline.alerting.outbox import Outbox, Pending
from pipeline.config import Channel, ConfigError
from pipeline.devtools.simulate import Simulator
from pipeline.engine import Engine
from pipeline.policy import Policy
from pipeline.replay import replay
from schemas.records import make_finding
from tests.robots import DING_SIGN, DING_TOO_FAST, FEISHU_SIGN, FEISHU_TOO_FAST, WECOM_BAD_KEY, WECOM_TOO_FAST

ZONE = ZoneInfo("Asia/Shanghai")
MON_10 = int(datetime(2026, 11, 2, 10, 0, tzinfo=ZONE).timestamp() * 1000)
SEC, MIN = 1000, 60_000


def finding(rule: str, severity: str, at: int, user: str = "u1", msg: str | None = None, group: str = "g1") -> dict:
    return make_finding(rule, severity, "o", group, msg or f"m{at}", user, at, {"matches": [{"text": "加微信"}]})


def run_alerts(policy: Policy, findings: list[dict], until: int, shuffle: int | None = None) -> list[dict]:
    """The engine's routing and alert stage, fed these findings (in a shuffled arrival order)."""
    from pipeline.alerting.route import route

    engine = Engine(policy)
    now_alerts, later = route(findings, policy)
    if shuffle is not None:
        random.Random(shuffle).shuffle(later)
    for offset, ev in enumerate(later):
        engine.process(ev, [], (1, offset, 0))
    ticked = engine.tick(until).alerts
    return sorted(now_alerts + ticked, key=lambda a: (a["ts"], a["alert_id"]))


POLICY = Policy({"alerts": {"to": ["sec"]}})


def test_one_line_routes_every_finding_from_medium_up():
    cfg = POLICY.alerts_for("o", "g1")
    assert cfg.channels("content.ad", "medium") == ("sec",)
    assert cfg.channels("member.nickname", "low") == ()
    policy = Policy({"alerts": {"to": ["sec"], "routes": [{"to": ["owner", "sec"], "rules": ["content.*"],
                                                           "min_severity": "low"}]}})
    assert policy.alerts_for("o", "g").channels("content.too_long", "low") == ("owner", "sec")
    assert Policy().alerts_for("o", "g").channels("content.gambling", "critical") == ()  # no line, no alerts


def test_urgent_findings_alert_at_once_one_per_finding():
    f1, f2 = finding("content.gambling", "high", MON_10), finding("content.gambling", "high", MON_10 + SEC, "u2")
    alerts = run_alerts(POLICY, [f1, f2], MON_10)
    assert [(a["kind"], a["finding_ids"], a["ts"]) for a in alerts] == [
        ("finding", [f1["finding_id"]], MON_10), ("finding", [f2["finding_id"]], MON_10 + SEC)]


def test_grouping_waits_then_merges_then_keeps_the_interval():
    fs = [finding("content.ad", "medium", MON_10 + i * SEC, f"u{i}") for i in range(5)]
    later = finding("content.ad", "medium", MON_10 + 40 * SEC, "u9")
    alerts = run_alerts(POLICY, fs + [later], MON_10 + 3_600_000)
    # group_wait 30 s after the first; the next one no sooner than group_interval (300 s) after it
    assert [(a["ts"] - MON_10, a["count"]) for a in alerts] == [(30 * SEC, 5), (330 * SEC, 1)]
    assert {i for a in alerts for i in a["finding_ids"]} == {f["finding_id"] for f in fs + [later]}


def test_a_member_reported_again_within_the_repeat_interval_is_counted_not_listed():
    fs = [finding("flood.rate", "medium", MON_10 + i * 400 * SEC, "spammer") for i in range(3)]
    alerts = run_alerts(POLICY, fs, MON_10 + 3_600_000)
    assert [(a["count"], a["repeats"], len(a["findings"])) for a in alerts] == [(1, 0, 1), (1, 1, 0), (1, 1, 0)]
    assert "重复1次" in render.text([alerts[1]], {})


def test_quiet_hours_hold_non_urgent_alerts_for_one_digest_in_the_morning():
    policy = Policy({"alerts": {"to": ["sec"], "quiet_hours": {"start": "22:00", "end": "08:00"}}})
    night = MON_10 + 13 * 3_600_000  # 23:00
    fs = [finding("content.ad", "medium", night + i * 20 * MIN, f"u{i}") for i in range(6)]
    urgent = finding("content.gambling", "high", night + 5 * MIN)
    alerts = run_alerts(policy, fs + [urgent], night + 12 * 3_600_000)
    morning = int(datetime(2026, 11, 3, 8, 0, tzinfo=ZONE).timestamp() * 1000)
    assert [(a["rule"], a["ts"], a["count"]) for a in alerts] == [
        ("content.gambling", urgent["ts"], 1), ("content.ad", morning, 6)]


def test_the_stage_gives_the_same_alerts_whatever_order_the_facts_arrive_in():
    rules = [random.Random(i).choice(["content.ad", "flood.rate", "deadline.overdue"]) for i in range(60)]
    # a notice's overdue members are different people; the others repeat five members
    fs = [finding(r, "medium", MON_10 + i * 7 * SEC, f"u{i}" if r.startswith("deadline") else f"u{i % 5}",
                  msg=f"n{i % 3}" if r.startswith("deadline") else f"m{i}") for i, r in enumerate(rules)]
    first = run_alerts(POLICY, fs, MON_10 + 86_400_000)
    for seed in range(3):
        assert run_alerts(POLICY, fs, MON_10 + 86_400_000, shuffle=seed) == first
    overdue = [a for a in first if a["rule"] == "deadline.overdue"]
    assert len({a["findings"][0]["msg_id"] for a in overdue}) == 3  # one reminder per notice


def test_replay_alerts_are_deterministic_and_account_for_every_routed_finding():
    lines = [r.value for r in Simulator(orgs=2, groups=10, members=8, seed=5).records(3000)]
    until = 4_102_000_000_000
    a = replay(lines, until=until, policy=POLICY)
    b = replay(lines, until=until, policy=POLICY)
    assert a.alerts == b.alerts and a.alerts
    routed = {f["finding_id"] for f in a.findings if f["severity"] != "low"}
    assert {i for al in a.alerts for i in al["finding_ids"]} == routed
    assert len({al["alert_id"] for al in a.alerts}) == len(a.alerts)


def test_deadline_reminders_name_and_mention_the_silent_members():
    people = (("u1", "张伟"), ("u2", "李娜"))
    fs = [make_finding("deadline.overdue", "medium", "o", "g1", "n1", u, MON_10,
                       {"name": name, "deadline": MON_10, "text": "请回复"}) for u, name in people]
    alert = run_alerts(POLICY, fs, MON_10 + MIN)[0]
    text = render.text([alert], {"g1": "集团财务群"})
    assert "未按时回复 · 集团财务群" in text and "张伟(u1)、李娜(u2)" in text and "10:00前回复" in text
    assert render.body("wecom", [alert], {})["text"]["mentioned_list"] == ["u1", "u2"]
    assert render.body("dingtalk", [alert], {})["at"]["atUserIds"] == ["u1", "u2"]
    assert '<at user_id="u1"></at>' in render.body("feishu", [alert], {})["content"]["text"]


def test_a_digest_of_thousands_stays_within_what_a_robot_takes():
    alerts = run_alerts(POLICY, [finding("content.gambling", "high", MON_10 + i, f"u{i}") for i in range(3000)],
                        MON_10)
    text = render.text(alerts, {}, "https://qg.example.com")
    assert len(text) <= render.MAX_CHARS + 200 and "共3000条" in text and "另有" in text


# --- the platforms' requests and replies ------------------------------------------------------

def test_dingtalk_and_feishu_signatures_are_the_platforms_reference_ones():
    ding = Channel(type="dingtalk", access_token="tok", secret="this is secret")
    url, _, _ = request(ding, [], {}, "", now=1_700_000_000.123)
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    ts = q["timestamp"][0]
    # dingtalk_sign_reference.py
    ref = base64.b64encode(hmac.new(b"this is secret", f"{ts}\nthis is secret".encode(), hashlib.sha256).digest())
    assert q["sign"][0] == ref.decode() and ts == "1700000000123"
    feishu = Channel(type="feishu", hook="h", secret="你的密钥")
    _, body, _ = request(feishu, [], {}, "", now=1_700_000_000.9)
    sent = orjson.loads(body)
    # feishu_sign_reference.py: the key is "timestamp\nsecret", the message empty
    ref = base64.b64encode(hmac.new(f"{sent['timestamp']}\n你的密钥".encode(), b"", hashlib.sha256).digest())
    assert sent["sign"] == ref.decode() and sent["timestamp"] == "1700000000"


def test_the_platforms_replies_mean_what_they_say():
    def reply(kind, body, status=200):
        return classify(kind, status, orjson.dumps(body))

    assert reply("wecom", {"errcode": 0, "errmsg": "ok"}).outcome == "sent"
    assert reply("wecom", WECOM_TOO_FAST).outcome == "too_fast"
    assert reply("wecom", WECOM_BAD_KEY).outcome == "config"
    too_fast = reply("dingtalk", DING_TOO_FAST)
    assert (too_fast.outcome, too_fast.wait) == ("too_fast", 5.0)
    assert reply("dingtalk", DING_SIGN).outcome == "config"
    assert reply("feishu", FEISHU_SIGN).outcome == "config" and reply("feishu", FEISHU_TOO_FAST).outcome == "too_fast"
    assert reply("feishu", {"code": 19024, "msg": "Key Words Not Found"}).outcome == "config"
    assert classify("webhook", 503, b"").outcome == "down" and classify("webhook", 401, b"").outcome == "config"
    assert classify("webhook", 429, b"", "7").wait == 7.0


# --- a channel's outbox -----------------------------------------------------------------------

def _pending(n: int) -> list[Pending]:
    return [Pending({"alert_id": f"a{i}", "channel": "c"}, ("t", i), 0.0) for i in range(n)]


def test_over_budget_alerts_wait_and_go_together_never_dropped():
    box = Outbox("c", Budget(20), retry_seconds=600)
    now, messages, settled = 0.0, [], set()
    for p in _pending(500):
        box.add(p, now)
        wait = box.ready_in(now)
        if wait == 0:  # one alert arrives every 0.1 s; the robot takes 20 a minute
            batch = box.take(now)
            messages.append((now, len(batch)))
            settled |= {a.pending.alert["alert_id"] for a in box.settle(batch, Reply("sent"), now) if a.final}
        now += 0.1
    while box.queue:
        now += box.ready_in(now) or 0
        batch = box.take(now)
        messages.append((now, len(batch)))
        settled |= {a.pending.alert["alert_id"] for a in box.settle(batch, Reply("sent"), now) if a.final}
    assert settled == {f"a{i}" for i in range(500)}
    assert all(sum(1 for t, _ in messages if start <= t < start + 60) <= 20 for start, _ in messages)
    assert max(n for _, n in messages) > 1  # digests


def test_too_fast_backs_off_and_a_dead_channel_gives_up_after_the_retry_time():
    box = Outbox("c", Budget(1000), retry_seconds=60)
    for p in _pending(2):
        box.add(p, 0.0)
    attempts = box.settle(box.take(0.0), Reply("too_fast", "130101", wait=5), 0.0)
    assert [a.status for a in attempts] == ["retry", "retry"] and box.ready_in(1.0) == 4.0
    now = 5.0
    while box.queue:
        attempts = box.settle(box.take(now), Reply("down", "ConnectionRefused"), now)
        now += box.ready_in(now) or 0
    assert [a.status for a in attempts] == ["dead", "dead"] and "gave up after" in attempts[0].error


def test_a_bad_key_is_one_configuration_error_and_nothing_is_retried():
    box = Outbox("c", Budget(1000), retry_seconds=600)
    first, second, third = _pending(3)
    box.add(first, 0.0)
    box.add(second, 0.0)
    out = box.settle(box.take(0.0), Reply("config", "93000: invalid webhook url"), 0.0)
    assert [a.status for a in out] == ["config_error", "config_error"] and not box.queue
    assert [a.status for a in box.add(third, 1.0)] == ["config_error"] and box.ready_in(1.0) is None


def test_secrets_never_reach_a_log_line(caplog):
    log = logging.getLogger("qunguard.test-redact")
    redact = Redact(["SECd1ngSecret", "wk-3f9a-key"])
    log.addFilter(redact)
    with caplog.at_level(logging.WARNING):
        log.warning("POST https://oapi.dingtalk.com/robot/send?access_token=%s failed", "wk-3f9a-key")
        log.warning("signing with SECd1ngSecret")
    assert "wk-3f9a-key" not in caplog.text and "SECd1ngSecret" not in caplog.text and "***" in caplog.text


def test_a_route_to_a_channel_nobody_configured_stops_start_up_with_one_line(tmp_path):
    pol = tmp_path / "p.yaml"
    pol.write_text("groups:\n  g1:\n    alerts:\n      routes: [{to: [g1-robot]}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^policy: groups.g1.alerts.routes\[0\].to: unknown channel 'g1-robot'"):
        from pipeline.policy import load_policy

        load_policy(pol).check_channels({"sec"})
    env = {"QG_KAFKA_URL": "kafka://127.0.0.1:1", "QG_POLICY_FILE": str(pol),
           "QG_NOTIFIER_CHANNELS": '{"sec": {"type": "webhook", "url": "http://127.0.0.1:1/x"}}', "PATH": ""}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "notifier"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "groups.g1.alerts.routes[0].to: unknown channel 'g1-robot'" in done.stderr
