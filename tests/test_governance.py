"""Membership and group governance: both stages through the Engine, as replay runs them, and the
member stage fed in the orders the worker's two partitions can deliver."""

from __future__ import annotations

import itertools
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from pipeline.config import ConfigError
from pipeline.engine import Engine
from pipeline.policy import Policy
from schemas.records import validate_event

ZONE = ZoneInfo("Asia/Shanghai")
MON_10 = int(datetime(2026, 11, 2, 10, 0, tzinfo=ZONE).timestamp() * 1000)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
_ids = itertools.count(1)


def ev(kind: str, at: int, **fields) -> dict:
    n = next(_ids)
    return validate_event({"kind": kind, "event_id": f"e{n}", "org_id": "o", "ts": at, **fields})


def roster(user: str, name: str, dept: str = "技术中心", status: str = "active", at: int = MON_10 - DAY) -> dict:
    return ev("roster", at, user_id=user, name=name, department=dept, status=status)


def join(group: str, user: str, nickname: str | None, at: int, actor: str | None = None, role: str = "member") -> dict:
    return ev("member", at, group_id=group, user_id=user, action="join", nickname=nickname, actor_id=actor, role=role)


def member(group: str, user: str, action: str, at: int, nickname: str | None = None) -> dict:
    return ev("member", at, group_id=group, user_id=user, action=action, nickname=nickname, actor_id=user)


def group(gid: str, at: int, action: str = "create", **fields) -> dict:
    return ev("group", at, group_id=gid, action=action, **fields)


def msg(gid: str, user: str, name: str, at: int, text: str = "好的", role: str = "member") -> dict:
    n = next(_ids)
    return ev("message", at, platform="wecom", group_id=gid, msg_id=f"m{n}", sender_id=user, sender_name=name,
              sender_role=role, text=text)


def run(events: list[dict], until: int | None = None, policy: Policy | None = None,
        rules: str = "member.,group.") -> list[dict]:
    """Replay's way: event-time order, forwarded facts handed over in process, one tick at the end."""
    engine = Engine(policy, loopback=True)
    found = []
    for e in sorted(events, key=lambda e: e["ts"]):
        found += engine.process(e, []).findings
    found += engine.tick(until if until is not None else max(e["ts"] for e in events)).findings
    return sorted((f for f in found if f["rule"].startswith(tuple(rules.split(",")))),
                  key=lambda f: (f["ts"], f["rule"], f["group_id"], f["user_id"]))


def got(findings: list[dict], rule: str) -> list[tuple[str, str]]:
    return [(f["group_id"], f["user_id"]) for f in findings if f["rule"] == rule]


# An org: 张伟 owns g1, g2 and g3; 李娜 and 王芳 are staff in all three.
STAFF = [roster("zw", "张伟"), roster("ln", "李娜", "财务部"), roster("wf", "王芳", "市场部")]
GROUPS = [group(g, MON_10 - 20 * HOUR, name=f"集团{g}群", owner_id="zw", registered=True) for g in ("g1", "g2", "g3")]
JOINED = [join(g, u, f"{d}-{n}", MON_10 - 10 * HOUR, actor="zw")
          for g in ("g1", "g2", "g3") for u, n, d in (("ln", "李娜", "财务部"), ("wf", "王芳", "市场部"))]
ORG = STAFF + GROUPS + JOINED


def test_a_well_kept_org_has_no_findings():
    assert run(ORG + [msg("g1", "ln", "财务部-李娜", MON_10)]) == []


def test_a_roster_change_makes_every_group_of_the_person_non_compliant_at_once_and_only_once():
    left = roster("ln", "李娜", "财务部", status="left", at=MON_10)
    later = [msg("g2", "ln", "财务部-李娜", MON_10 + HOUR), member("g3", "ln", "leave", MON_10 + 2 * HOUR),
             join("g3", "ln", "财务部-李娜", MON_10 + 3 * HOUR, actor="zw")]
    found = run(ORG + [left] + later)
    departed = [f for f in found if f["rule"] == "member.departed"]
    assert sorted(got(departed, "member.departed")) == [("g1", "ln"), ("g2", "ln"), ("g3", "ln"), ("g3", "ln")]
    first, rejoined = [f for f in departed if f["ts"] == MON_10], [f for f in departed if f["ts"] != MON_10]
    assert {f["msg_id"] for f in first} == {left["event_id"]} and len(first) == 3
    # Removed from g3, then let in again: a new episode, found when they join.
    assert rejoined[0]["ts"] == MON_10 + 3 * HOUR and rejoined[0]["msg_id"] == later[2]["event_id"]
    assert first[0]["severity"] == "high" and first[0]["evidence"]["name"] == "李娜"


def test_a_departed_person_joining_a_group_is_found_on_joining():
    events = ORG + [roster("wf", "王芳", "市场部", status="left", at=MON_10), member("g1", "wf", "leave", MON_10),
                    member("g2", "wf", "leave", MON_10), member("g3", "wf", "leave", MON_10)]
    assert run(events) == [], "removed at once: 离职即删 kept"
    dissolved = ORG + [group("g2", MON_10 - HOUR, action="dissolve"),
                       roster("wf", "王芳", "市场部", status="left", at=MON_10)]
    assert sorted(got(run(dissolved), "member.departed")) == [("g1", "wf"), ("g3", "wf")], "g2 is gone"
    events.append(join("g9", "wf", "市场部-王芳", MON_10 + DAY, actor="zw"))
    assert got(run(events), "member.departed") == [("g9", "wf")]


def test_nickname_default_contains_the_roster_name_one_finding_per_nickname_and_none_once_fixed():
    events = ORG + [member("g1", "wf", "nickname", MON_10, nickname="静待花开")]
    # The same wrong nickname in ten messages is still one finding, not one per message.
    events += [msg("g1", "wf", "静待花开", MON_10 + i * MIN) for i in range(1, 11)]
    fixed = member("g1", "wf", "nickname", MON_10 + HOUR, nickname="王芳")
    events += [fixed] + [msg("g1", "wf", "王芳", MON_10 + HOUR + i * MIN) for i in range(1, 5)]
    found = run(events)
    assert got(found, "member.nickname") == [("g1", "wf")]
    assert found[0]["evidence"]["nickname"] == "静待花开" and found[0]["evidence"]["name"] == "王芳"
    # Breaking it again with another name is a new finding; seen first in a message, it counts too.
    again = run(events + [msg("g1", "wf", "Tony老师", MON_10 + 2 * HOUR)])
    assert [f["evidence"]["nickname"] for f in again if f["rule"] == "member.nickname"] == ["静待花开", "Tony老师"]


def test_nickname_templates_per_group():
    policy = Policy({"groups": {
        "g1": {"membership": {"nickname": "{department}-{name}"}},
        "g2": {"membership": {"nickname": ["{student}爸爸/妈妈", "{student}"]}},
        "g3": {"membership": {"nickname": "{subject}{name}"}}}})
    events = STAFF + GROUPS + [
        join("g1", "ln", "财务部-李娜", MON_10, actor="zw"),       # conforms
        join("g1", "wf", "王芳", MON_10, actor="zw"),              # name only: no department
        join("g2", "p1", "王小明妈妈", MON_10, actor="zw"),         # parents are not on the roster
        join("g3", "ln", "数学李娜", MON_10, actor="zw"),
        join("g3", "wf", "数学-张三", MON_10, actor="zw"),          # someone else's name
    ]
    found = run(events, policy=policy)
    assert got(found, "member.nickname") == [("g1", "wf"), ("g3", "wf")]
    assert found[0]["evidence"]["formats"] == ["{department}-{name}"]
    # A department change in the roster makes g1's 财务部-李娜 wrong: found then, with the roster event.
    moved = roster("ln", "李娜", "审计部", at=MON_10 + HOUR)
    later = run(events + [moved], policy=policy)
    assert [(f["group_id"], f["msg_id"]) for f in later if f["user_id"] == "ln"] == [("g1", moved["event_id"])]


def test_unauthorized_invite_and_external_member():
    admin_said = msg("g1", "wf", "市场部-王芳", MON_10 - HOUR, role="admin")  # roles come from senders too
    events = ORG + [admin_said,
                    join("g1", "x1", "Alice", MON_10, actor="ln"),    # a member invites an outsider
                    join("g1", "x2", "王律师", MON_10, actor="zw"),    # the owner approves an outsider
                    join("g1", "x3", "Bob", MON_10, actor="wf"),      # an admin does
                    join("g2", "x4", "Carol", MON_10, actor=None)]    # a QR code: nobody approved
    found = run(events)
    assert got(found, "member.unauthorized_invite") == [("g1", "ln")]
    invite = next(f for f in found if f["rule"] == "member.unauthorized_invite")
    assert invite["evidence"]["invited"] == "x1" and invite["evidence"]["inviter_role"] == "member"
    assert sorted(got(found, "member.external")) == [("g1", "x1"), ("g2", "x4")]


def test_group_registration_name_format_expiry_and_idleness():
    policy = Policy({"membership": {"name_pattern": "^集团"}})
    ends = int(datetime(2026, 11, 5, 18, 0, tzinfo=ZONE).timestamp() * 1000)  # a Thursday evening
    events = [group("t1", MON_10, name="集团项目临时群", owner_id="zw", registered=True, temporary=True, ends_at=ends),
              group("u1", MON_10, name="吃喝玩乐", owner_id="zw", registered=False),
              group("u1", MON_10 + HOUR, action="update", name="吃喝玩乐"),   # the same name: not again
              msg("u1", "zw", "张伟", MON_10 + DAY)]
    found = run(events, until=MON_10 + 10 * DAY, policy=policy)
    assert got(found, "group.unregistered") == [("u1", "zw")]
    assert got(found, "group.name_format") == [("u1", "zw")]
    # Three working days after Thursday: Fri, Mon, Tue; due at Wednesday 00:00.
    expired = [f for f in found if f["rule"] == "group.expired"]
    assert [datetime.fromtimestamp(f["ts"] / 1000, ZONE).strftime("%a %d %H:%M") for f in expired] == ["Wed 11 00:00"]
    assert not got(found, "group.idle")
    # Dissolved in time: nothing expires.
    dissolved = events + [group("t1", ends + DAY, action="dissolve")]
    assert not got(run(dissolved, until=MON_10 + 10 * DAY, policy=policy), "group.expired")
    # Registered later: no second finding once it is registered.
    idle = run(events + [group("u1", MON_10 + 2 * HOUR, action="update", registered=True)],
               until=MON_10 + DAY + 95 * DAY, policy=policy)
    assert [(f["group_id"], f["ts"]) for f in idle if f["rule"] == "group.idle"] == [
        ("t1", MON_10 + 90 * DAY), ("u1", MON_10 + DAY + 90 * DAY)]
    assert len(got(idle, "group.unregistered")) == 1


def test_the_member_stage_gives_the_same_findings_whatever_order_the_partitions_deliver():
    """Roster events come from the user's partition, membership facts from the groups' partitions,
    later and in any interleaving; inputs applied at the timer in event-time order do not care."""
    left = roster("ln", "李娜", "财务部", status="left", at=MON_10 + 30 * MIN)
    events = ORG + [member("g1", "ln", "leave", MON_10 + 10 * MIN),       # left g1 before the roster says so
                    member("g2", "ln", "nickname", MON_10 + 20 * MIN, nickname="娜娜"), left,
                    join("g4", "ln", "李娜", MON_10 + 40 * MIN, actor="ln")]
    expected = run(events)
    assert sorted(got(expected, "member.departed")) == [("g2", "ln"), ("g3", "ln"), ("g4", "ln")]
    assert got(expected, "member.nickname") == [("g2", "ln")]
    # The worker: the group stage runs per group in order, its facts reach the member stage late and
    # shuffled among the roster events; the timer applies them.
    for seed in range(5):
        engine = Engine(None)
        found = []
        forwarded = []
        for e in sorted(events, key=lambda e: e["ts"]):
            if e["kind"] != "roster":
                out = engine.process(e, [])
                found += out.findings
                forwarded += out.forward
        arrivals = [e for e in events if e["kind"] == "roster"] + forwarded
        random.Random(seed).shuffle(arrivals)
        for e in arrivals:
            found += engine.process(e, []).findings
        found += engine.tick(max(e["ts"] for e in events)).findings
        mine = sorted((f for f in found if f["rule"].startswith(("member.", "group."))),
                      key=lambda f: (f["ts"], f["rule"], f["group_id"], f["user_id"]))
        assert [f["finding_id"] for f in mine] == [f["finding_id"] for f in expected]


def test_bad_membership_settings_stop_with_the_key_named():
    with pytest.raises(ConfigError, match=r"policy: membership\.nickname: .*\{name\}"):
        Policy({"membership": {"nickname": "{部门-{name}"}})
    with pytest.raises(ConfigError, match=r"policy: groups\.g\.membership\.name_pattern: bad regular expression"):
        Policy({"groups": {"g": {"membership": {"name_pattern": "(["}}}})
    with pytest.raises(ConfigError, match=r"policy: membership\.disabled: member\.nick: unknown rule"):
        Policy({"membership": {"disabled": ["member.nick"]}})
    assert not Policy({"membership": {"disabled": ["member.departed"]}}).membership_for("o", "g").enabled(
        "member.departed")


def test_a_late_forward_is_still_applied_in_event_time_order_when_the_timer_waits_for_it():
    """A worker's view: ln leaves g1 at 10:00 (her group's partition is slow to forward that), the
    roster says she left at 10:05. Ticked only to the settled moment, the member stage waits for the
    leave and reports no departure, as replay does; ticked on its own clock it would report one."""
    from pipeline.delivery.settled import Progress, settled

    leave = member("g1", "ln", "leave", MON_10)
    left = roster("ln", "李娜", "财务部", status="left", at=MON_10 + 5 * MIN)
    assert ("g1", "ln") not in got(run(ORG + [leave, left]), "member.departed")

    def worker(bound_while_late: int | None) -> list[dict]:
        engine = Engine()
        found, pending = [], []
        for e in sorted(ORG, key=lambda e: e["ts"]):
            out = engine.process(e, [], (0, next(_ids), 0))
            pending += out.forward
        for f in pending:
            engine.process(f, [], (1, next(_ids), 0))
        engine.tick(MON_10 - MIN)
        engine.process(left, [], (1, next(_ids), 0))  # the roster's partition is on time
        found += engine.tick(MON_10 + 10 * MIN, settled=bound_while_late).findings
        for f in engine.process(leave, [], (0, next(_ids), 0)).forward:  # the group's partition, late
            engine.process(f, [], (1, next(_ids), 0))
        found += engine.tick(MON_10 + 10 * MIN, settled=None).findings
        return [p for p in got(found, "member.departed") if p[0] == "g1"]

    # the group's partition (0) has stored up to 09:59 and has records left; the roster's is done
    bound = settled({0: Progress(5, MON_10 - MIN), 1: Progress(9, MON_10 + 5 * MIN)}, {0: 7, 1: 9}, {}, 10_000)
    assert bound == MON_10 - MIN - 10_000
    assert worker(bound) == []
    assert worker(None) == [("g1", "ln")]  # what the stream did before it waited


def test_a_member_whose_nickname_copies_the_owners_asking_for_money_is_an_impersonation():
    ask = "我换了个号，请财务先转账五万到这个账户，急用"
    events = [join("g1", "boss", "王总", MON_10 - DAY, role="owner"),
              join("g1", "fin", "财务小陈", MON_10 - DAY),
              join("g1", "fake", "王 总", MON_10, actor="fin"),  # the same after normalisation
              msg("g1", "fake", "王 总", MON_10 + 60_000, ask),
              msg("g1", "fake", "王 总", MON_10 + 120_000, "明天上午开会"),  # no request: nothing
              msg("g1", "boss", "王总", MON_10 + 180_000, ask),  # the owner himself
              join("g1", "aide", "王总助理", MON_10),  # another name, not a copy
              msg("g1", "aide", "王总助理", MON_10 + 240_000, "报销单请转给财务，账户信息我发邮件")]
    found = run(events, rules="member.impersonation")
    assert got(found, "member.impersonation") == [("g1", "fake")]
    [f] = found
    assert f["severity"] == "critical" and f["evidence"]["copies"] == {"user_id": "boss", "nickname": "王总",
                                                                         "role": "owner"}
    assert f["evidence"]["request"]["normalized"] in ("转账", "账户")
    off = Policy({"membership": {"disabled": ["member.impersonation"]}})
    assert run(events, policy=off, rules="member.impersonation") == []
