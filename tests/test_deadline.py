"""Notices, answers and deadlines: the pure detector through the Engine, as replay runs it."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import ConfigError
from pipeline.detectors.deadline.when import due
from pipeline.engine import Engine
from pipeline.policy import Policy
from schemas.records import validate_event

ZONE = ZoneInfo("Asia/Shanghai")
MON_10 = int(datetime(2026, 11, 2, 10, 0, tzinfo=ZONE).timestamp() * 1000)
MIN, HOUR = 60_000, 3_600_000
_ids = itertools.count(1)


def local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, ZONE).strftime("%m-%d %H:%M")


def member(user: str, action: str = "join", at: int = MON_10 - HOUR, nickname: str | None = None, **kw) -> dict:
    n = next(_ids)
    return validate_event({"kind": "member", "event_id": f"e{n}", "org_id": "o", "ts": at, "group_id": "g",
                           "user_id": user, "action": action, "nickname": nickname or f"名{user}", **kw})


def msg(user: str, text: str, at: int, **kw) -> dict:
    n = next(_ids)
    return validate_event({"kind": "message", "event_id": f"e{n}", "org_id": "o", "ts": at, "platform": "wecom",
                           "group_id": "g", "msg_id": kw.pop("msg_id", f"m{n}"), "sender_id": user, "text": text,
                           **kw})


def run(events: list[dict], until: int, policy: Policy | None = None) -> list[dict]:
    engine = Engine(policy)
    found = []
    for e in sorted(events, key=lambda e: e["ts"]):
        found += engine.process(e, []).findings
    found += engine.tick(until).findings
    return sorted((f for f in found if f["rule"].startswith("deadline.")), key=lambda f: (f["ts"], f["user_id"]))


def who(findings: list[dict], rule: str = "deadline.overdue") -> list[str]:
    return sorted(f["user_id"] for f in findings if f["rule"] == rule)


GROUP = [member("boss", role="owner"), member("a"), member("b"), member("c")]
NOTICE = "【通知】明天上午九点全体人员开会，收到请回复"


def test_reply_by_ack_word_and_by_quote_and_no_reply():
    notice = msg("boss", NOTICE, MON_10, mentions=["@all"])
    events = GROUP + [notice, msg("a", "收到", MON_10 + MIN), msg("b", "我周五不在", MON_10 + 2 * MIN,
                                                                   reply_to=notice["msg_id"])]
    found = run(events, MON_10 + 6 * HOUR)
    # a acknowledged, b quoted the notice, c never answered; the sender owes nothing.
    assert who(found) == ["c"]
    [f] = found
    assert f["msg_id"] == notice["msg_id"] and f["ts"] == MON_10 + 5 * HOUR
    assert f["evidence"]["name"] == "名c" and f["evidence"]["deadline"] == MON_10 + 5 * HOUR
    assert f["evidence"]["basis"] == "default"


def test_late_reply_is_still_overdue_and_recorded_with_its_delay():
    notice = msg("boss", NOTICE, MON_10)
    engine = Engine()
    rows = []
    for e in GROUP + [notice, msg("a", "收到", MON_10 + 6 * HOUR)]:
        rows += engine.process(e, []).rows
    found = engine.tick(MON_10 + 7 * HOUR).findings
    assert sorted(f["user_id"] for f in found) == ["a", "b", "c"]
    responses = [r for t, r in rows if t == "responses"]
    assert [(r["user_id"], r["delay_ms"], r["late"]) for r in responses] == [("a", 6 * HOUR, True)]


def test_a_notice_that_says_no_reply_is_needed_is_not_tracked():
    events = GROUP + [msg("boss", "本周值班安排见附件，此条信息不必回复", MON_10)]
    assert run(events, MON_10 + 48 * HOUR) == []


def test_mentions_of_a_subset_ask_only_them():
    notice = msg("boss", "@a @b 请把报表发我，请确认", MON_10, mentions=["a", "b"])
    found = run(GROUP + [notice, msg("a", "好的", MON_10 + MIN)], MON_10 + 6 * HOUR)
    assert who(found) == ["b"]


def test_several_open_notices_an_answer_goes_to_the_right_one():
    first = msg("boss", "请各部门周五前交总结，收到请回复", MON_10)
    second = msg("boss", "@a 明早的材料你来准备，请确认", MON_10 + 10 * MIN, mentions=["a"])
    third = msg("boss", "下周一放假通知，收到请回复", MON_10 + 20 * MIN)
    events = GROUP + [first, second, third,
                      msg("a", "收到", MON_10 + 30 * MIN),                              # → second (mentions a)
                      msg("b", "收到", MON_10 + 31 * MIN),                              # → third (most recent)
                      msg("b", "好的", MON_10 + 32 * MIN, reply_to=first["msg_id"]),    # → first (quote)
                      msg("c", "收到", MON_10 + 33 * MIN)]                              # → third
    found = run(events, MON_10 + 6 * HOUR)
    owed = sorted((f["msg_id"], f["user_id"]) for f in found)
    assert owed == sorted([(first["msg_id"], "a"), (first["msg_id"], "c"), (third["msg_id"], "a")])


def test_explicit_and_urgent_deadlines():
    urgent = msg("boss", "紧急通知：请立即检查消防设施，收到请回复", MON_10)
    found = run(GROUP + [urgent, msg("a", "收到", MON_10 + 20 * MIN), msg("b", "收到", MON_10 + 40 * MIN)],
                MON_10 + HOUR)
    assert who(found) == ["b", "c"] and found[0]["ts"] == MON_10 + 30 * MIN
    assert found[0]["evidence"]["basis"] == "urgent"
    # An explicit deadline wins over urgency and the default.
    explicit = msg("boss", "紧急！请大家10分钟内在群里回复是否参加", MON_10)
    found = run(GROUP + [explicit, msg("a", "收到", MON_10 + 8 * MIN)], MON_10 + HOUR)
    assert who(found) == ["b", "c"] and {f["ts"] for f in found} == {MON_10 + 10 * MIN}
    assert found[0]["evidence"]["basis"] == "explicit: 10分钟内"


@pytest.mark.parametrize(("text", "expected"), [
    ("请大家10分钟内回复", "11-02 10:10"),
    ("半小时内回复收到", "11-02 10:30"),
    ("两个小时之内提交，请确认", "11-02 12:00"),
    ("下午5点前把考勤表发给我，请确认", "11-02 17:00"),
    ("17:30前回复", "11-02 17:30"),
    ("五点半之前交，收到请回复", "11-02 17:30"),
    ("请各位于今天下班前提交安全检查表，收到请回复", "11-02 18:00"),
    ("明天上午10点前提交，请回复", "11-03 10:00"),
    ("明天上午交材料，请回复", "11-03 12:00"),
    ("上午9点前回复", "11-03 09:00"),  # already past today: tomorrow
    ("收到请回复", "11-02 15:00"),
])
def test_deadline_phrases(text, expected):
    assert local(due(text, MON_10, Policy().deadline_for("o", "g"))[0]) == expected


def test_working_hours_stop_the_clock():
    policy = Policy({"deadline": {"working_hours": {"start": "08:30", "end": "17:30"}}})
    friday_4pm = int(datetime(2026, 11, 6, 16, 0, tzinfo=ZONE).timestamp() * 1000)
    # 1.5 hours on Friday, 3.5 on Monday morning.
    assert local(due("收到请回复", friday_4pm, policy.deadline_for("o", "g"))[0]) == "11-09 12:00"


def test_members_who_join_or_leave_while_a_notice_is_open():
    notice = msg("boss", NOTICE, MON_10)
    events = GROUP + [notice, member("d", at=MON_10 + HOUR),              # joined later: not asked
                      member("b", "leave", at=MON_10 + 2 * HOUR),          # left before the deadline
                      member("c", "leave", at=MON_10 + 6 * HOUR)]          # left after it: still overdue
    found = run(events, MON_10 + 7 * HOUR)
    assert who(found) == ["a", "c"]


def test_escalation_the_next_morning_for_those_still_silent():
    notice = msg("boss", NOTICE, MON_10)
    events = GROUP + [notice, msg("a", "收到", MON_10 + MIN), msg("b", "收到，抱歉晚了", MON_10 + 8 * HOUR)]
    found = run(events, MON_10 + 30 * HOUR)
    assert who(found) == ["b", "c"]
    escalated = [f for f in found if f["rule"] == "deadline.escalated"]
    assert [f["user_id"] for f in escalated] == ["c"]
    assert local(escalated[0]["ts"]) == "11-03 09:00" and escalated[0]["evidence"]["escalated_at"] == escalated[0]["ts"]
    # Before 09:00 the next day nothing is escalated yet, and replay's clock decides (--until).
    assert [f["rule"] for f in run(events, MON_10 + 22 * HOUR)] == ["deadline.overdue"] * 2


def test_timers_fire_once_and_the_same_whenever_the_clock_ticks():
    notice = msg("boss", NOTICE, MON_10)
    events = GROUP + [notice, msg("a", "收到", MON_10 + 4 * HOUR), msg("b", "收到", MON_10 + 6 * HOUR)]
    engine = Engine()
    for e in events:
        engine.process(e, [])
    # A worker's wall clock ticks often and late; the findings are those replay's one tick finds.
    ticked = []
    for t in range(0, 40):
        ticked += engine.tick(MON_10 + t * HOUR).findings
    assert sorted((f["rule"], f["user_id"]) for f in ticked) == sorted(
        (f["rule"], f["user_id"]) for f in run(events, MON_10 + 40 * HOUR))


def test_bad_deadline_settings_stop_with_the_key_named():
    with pytest.raises(ConfigError, match=r"policy: deadline\.working_hours\.days"):
        Policy({"deadline": {"working_hours": {"days": [0]}}})
    with pytest.raises(ConfigError, match=r"policy: groups\.g\.deadline\.reply_hours"):
        Policy({"groups": {"g": {"deadline": {"reply_hours": 0}}}})


def test_dashboard_queries(tmp_path):
    """The README's answer-rate and answer-time queries, over rows the detector produced (chDB)."""
    import re
    from pathlib import Path

    from pipeline.sink.backends import connect
    from pipeline.sink.migrate import migrate
    from schemas.rows import TABLES, Source, detector_row

    first, second = msg("boss", NOTICE, MON_10), msg("boss", "下周一放假通知，收到请回复", MON_10 + HOUR)
    events = GROUP + [first, msg("a", "收到", MON_10 + 2 * MIN), msg("b", "收到", MON_10 + 6 * HOUR),
                      second, msg("a", "收到", MON_10 + HOUR + 4 * MIN)]
    engine = Engine()
    rows: dict[str, list] = {"notices": [], "responses": []}
    for i, e in enumerate(events):
        for table, record in engine.process(e, []).rows:
            rows[table].append(detector_row(table, record, Source("t", 0, i)))
    backend = connect(f"chdb:{tmp_path / 'db'}")
    try:
        migrate(backend)
        for table, table_rows in rows.items():
            backend.insert(table, TABLES[table], table_rows)
        readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
        sql = re.search(r"-- answer rate.*?\n(.*?)\n  -- median", readme, re.S).group(1)
        [(group, asked, answered, rate)] = backend.query(sql.replace(" notices", f" {backend.database}.notices")
                                                         .replace(" responses", f" {backend.database}.responses"))
        # Two notices to a, b, c: a answered both in time, b one but late, c none.
        assert (group, asked, answered) == ("g", 6, 2) and abs(rate - 2 / 6) < 1e-9
        sql = re.search(r"-- median answer time per member\n(.*?)\n  ```", readme, re.S).group(1)
        per_member = backend.query(sql.replace(" responses", f" {backend.database}.responses") + " ORDER BY user_id")
        assert [(u, n, m, late) for _, u, n, m, late in per_member] == [("a", 2, 3.0, 0), ("b", 1, 360.0, 1)]
    finally:
        backend.close()
