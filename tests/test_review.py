"""The review loop through replay, as a reviewer and a member see it: strikes walk the ladder in a
rolling window, verdicts withdraw, confirm and appeal findings, a verdict may come before its
finding, and the policy a reviewer reads merges key by key and names its version."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.policy import Policy, load_policy
from pipeline.replay import ReplayResult, replay
from pipeline.review.suggest import accept, context_of, suggest
from pipeline.text.tokenize import get_tokenizer
from schemas.records import finding_id

ZONE = ZoneInfo("Asia/Shanghai")
MON_10 = int(datetime(2026, 11, 2, 10, 0, tzinfo=ZONE).timestamp() * 1000)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
GAMBLING = "澳门赌场线上开户，百家乐充值送彩金"
_ids = itertools.count(1)


def msg(at: int, text: str = GAMBLING, user: str = "u1", group: str = "g1", **extra) -> dict:
    n = next(_ids)
    return {"kind": "message", "event_id": f"e{n}", "org_id": "o", "ts": at, "platform": "wecom",
            "group_id": group, "msg_id": f"m{n}", "sender_id": user, "text": text, **extra}


def fid_of(m: dict, rule: str = "content.gambling") -> str:
    return finding_id(rule, m["group_id"], m["msg_id"], m["sender_id"])


def verdict(at: int, fid: str, v: str, actor: str = "reviewer", note: str = "") -> dict:
    return {"kind": "feedback", "event_id": f"fb{next(_ids)}", "org_id": "o", "ts": at, "finding_id": fid,
            "verdict": v, "actor_id": actor, "note": note}


def run(events: list[dict], policy: Policy | None = None, until: int | None = None) -> ReplayResult:
    return replay([orjson.dumps(e) for e in events], policy=policy, until=until)


def sanctions(result: ReplayResult, final: bool = True) -> list[tuple[str, int]]:
    """(action, strikes counted) of the sanctions, in order."""
    found = result.final() if final else result.findings
    return [(f["rule"].removeprefix("sanction."), f["evidence"]["count"]) for f in found
            if f["rule"].startswith("sanction.")]


# --- the ladder ---------------------------------------------------------------------------------

def test_five_strikes_in_a_month_warn_then_mute_then_remove():
    posts = [msg(MON_10 + d * DAY) for d in range(5)]
    result = run(posts)
    assert sanctions(result) == [("warn", 1), ("mute", 3), ("remove", 5)]
    mute = next(f for f in result.findings if f["rule"] == "sanction.mute")
    assert mute["user_id"] == "u1" and mute["group_id"] == "g1" and mute["ts"] == posts[2]["ts"]
    assert [s["finding_id"] for s in mute["evidence"]["strikes"]] == [fid_of(p) for p in posts[:3]]
    assert mute["evidence"]["mute_hours"] == 24 and mute["severity"] == "high"
    # another member, and the same member in another group, have ladders of their own
    other = run(posts[:2] + [msg(MON_10 + 2 * DAY, user="u2"), msg(MON_10 + 3 * DAY, group="g2")])
    assert sanctions(other) == [("warn", 1), ("warn", 1), ("warn", 1)]


def test_the_window_is_rolling_and_its_edge_is_exclusive():
    day0, day10 = msg(MON_10), msg(MON_10 + 10 * DAY)
    # the third strike exactly 30 days after the first: the first strike and its warning are out of
    # the window, so two strikes are a (new) warning, not a mute
    assert sanctions(run([day0, day10, msg(MON_10 + 30 * DAY)])) == [("warn", 1), ("warn", 2)]
    # one millisecond earlier it is in, and the member is muted
    assert sanctions(run([day0, day10, msg(MON_10 + 30 * DAY - 1)])) == [("warn", 1), ("mute", 3)]
    # a month after the warning the ladder starts again from the bottom
    assert sanctions(run([day0, msg(MON_10 + 31 * DAY)])) == [("warn", 1), ("warn", 1)]


def test_a_false_positive_withdraws_the_finding_and_its_strike():
    a, b, c = msg(MON_10), msg(MON_10 + HOUR), msg(MON_10 + 2 * HOUR)
    wrong = verdict(MON_10 + 90 * MIN, fid_of(b), "false_positive", note="是新闻截图，不是广告")
    result = run([a, b, wrong, c])
    assert sanctions(result) == [("warn", 1)], "the third post is the second strike: no mute"
    assert fid_of(b) not in {f["finding_id"] for f in result.final()}
    assert fid_of(b) in {f["finding_id"] for f in result.findings}, "the finding itself is never deleted"
    assert [(r["status"], r["actor_id"], r["note"]) for r in result.statuses[fid_of(b)]] == [
        ("false_positive", "reviewer", "是新闻截图，不是广告")]
    # withdrawn after the mute: the mute stands (it was issued), the count drops
    late = verdict(MON_10 + 3 * HOUR, fid_of(b), "false_positive")
    after = run([a, b, c, late, msg(MON_10 + 4 * HOUR)])
    assert sanctions(after) == [("warn", 1), ("mute", 3)], "the fourth post makes three again: still mute"


def test_confirm_appeal_and_confirm_again_is_history_not_an_edit():
    a = msg(MON_10)
    fid = fid_of(a)
    events = [a, verdict(MON_10 + HOUR, fid, "confirmed"), verdict(MON_10 + 2 * HOUR, fid, "appeal", actor="u1"),
              verdict(MON_10 + 3 * HOUR, fid, "confirmed", note="维持")]
    result = run(events)
    assert [(r["seq"], r["status"], r["verdict"], r["actor_id"]) for r in result.statuses[fid]] == [
        (1, "confirmed", "confirmed", "reviewer"), (2, "appealed", "appeal", "u1"),
        (3, "confirmed", "confirmed", "reviewer")]
    assert result.status(fid) == "confirmed" and sanctions(result) == [("warn", 1)]
    # an appeal of a finding already withdrawn has nothing to appeal: a dead letter with the reason
    gone = run([a, verdict(MON_10 + HOUR, fid, "false_positive"), verdict(MON_10 + 2 * HOUR, fid, "appeal")])
    assert gone.status(fid) == "false_positive"
    assert [d["error"] for d in gone.dead] == [f"verdict: finding {fid} is withdrawn already; there is nothing "
                                                "to appeal"]


def test_overdue_answers_are_strikes_only_once_confirmed():
    notice = msg(MON_10, "@u1 @u2 请把报表发我，请确认", user="boss", mentions=["u1", "u2"])
    ok = msg(MON_10 + MIN, "收到", user="u2")
    until = MON_10 + 2 * DAY
    plain = run([notice, ok], until=until)
    overdue = [f for f in plain.findings if f["rule"] == "deadline.overdue"]
    assert [f["user_id"] for f in overdue] == ["u1"] and sanctions(plain) == []
    fid = overdue[0]["finding_id"]
    confirmed = run([notice, ok, verdict(MON_10 + DAY, fid, "confirmed")], until=until)
    warn = [f for f in confirmed.findings if f["rule"] == "sanction.warn"]
    assert [(f["user_id"], f["ts"]) for f in warn] == [("u1", MON_10 + DAY)], "warned when it was confirmed"


def test_a_verdict_before_its_finding_waits_and_one_for_no_finding_is_a_dead_letter():
    a = msg(MON_10 + 10 * MIN)
    early = verdict(MON_10, fid_of(a), "false_positive")  # the console's clock was ahead
    result = run([early, a])
    assert result.status(fid_of(a)) == "false_positive" and sanctions(result) == []
    assert result.final() == []
    nobody = "0" * 24
    lost = run([a, verdict(MON_10 + HOUR, nobody, "confirmed")], until=MON_10 + 3 * HOUR)
    assert [d["error"] for d in lost.dead] == [
        f"verdict: finding {nobody} not seen within 3600 s of the verdict (unknown, or older than "
        "sanctions.keep_days)"]
    # within the wait nothing is decided yet
    assert run([a, verdict(MON_10 + HOUR, nobody, "confirmed")], until=MON_10 + HOUR + 30 * MIN).dead == []


def test_a_withdrawn_sanction_lets_the_ladder_issue_that_step_again():
    posts = [msg(MON_10 + h * HOUR) for h in range(3)]
    first = run(posts)
    mute = next(f for f in first.findings if f["rule"] == "sanction.mute")
    again = run(posts + [verdict(MON_10 + 3 * HOUR, mute["finding_id"], "false_positive", note="群主不同意"),
                         msg(MON_10 + 4 * HOUR)])
    assert sanctions(again) == [("warn", 1), ("mute", 4)]
    assert sanctions(again, final=False) == [("warn", 1), ("mute", 3), ("mute", 4)]


def test_a_restarted_worker_that_reads_its_own_sanction_back_first_issues_nothing_more():
    """After a SIGKILL between publishing and saving state, the new worker has the old state and the
    dead one's `strike` fact for the sanction it made, ahead of the strikes that made it."""
    from pipeline.detectors import Context
    from pipeline.review.ladder import LadderStage, strike_fact
    from schemas.records import make_finding, validate_event

    stage = LadderStage()
    posts = [make_finding("content.gambling", "high", "o", "g1", f"m{i}", "u1", MON_10 + i * HOUR, {})
             for i in range(4)]
    facts = [validate_event(strike_fact(f)) for f in posts]

    def feed(state, events, until):
        for e in events:
            state = stage.on_event(e, state, Context(e["ts"])).state
        out = stage.tick("k", state, Context(until))
        return out.state, [(f["rule"], f["evidence"]["count"]) for f in out.findings], out.findings

    state, made, found = feed(None, facts[:3], MON_10 + 2 * HOUR)
    assert made == [("sanction.warn", 1), ("sanction.mute", 3)]
    old = None
    for e in facts[:3]:
        old = stage.on_event(e, old, Context(e["ts"])).state
    came_back = [validate_event(strike_fact(f)) for f in found]
    again, made_again, _ = feed(old, came_back, MON_10 + 2 * HOUR)
    assert made_again == made, "the same sanctions, sent again (storage keeps one)"
    _, after, _ = feed(again, facts[3:], MON_10 + 3 * HOUR)
    assert after == [], "a fourth strike is still the mute's step"


def test_the_ladder_is_the_policys_and_a_bad_step_names_its_key():
    policy = Policy({"sanctions": {"steps": [{"strikes": 2, "action": "mute", "mute_hours": 2}],
                                   "window_days": 7}})
    result = run([msg(MON_10), msg(MON_10 + DAY), msg(MON_10 + 9 * DAY)], policy)
    assert sanctions(result) == [("mute", 2)]
    assert [f["evidence"]["mute_hours"] for f in result.final() if f["rule"] == "sanction.mute"] == [2]
    with pytest.raises(ConfigError, match=r"policy: sanctions.steps: steps must ask for more strikes each"):
        Policy({"sanctions": {"steps": [{"strikes": 3, "action": "warn"}, {"strikes": 3, "action": "mute"}]}})
    with pytest.raises(ConfigError, match=r"policy: groups.g1.sanctions.steps.0.action: Input should be 'warn'"):
        Policy({"groups": {"g1": {"sanctions": {"steps": [{"strikes": 1, "action": "ban"}]}}}})


# --- severity and the policy a reviewer reads --------------------------------------------------------

def test_severity_per_rule_is_the_policys_and_every_finding_carries_its_policy_version():
    policy = Policy({"severity": {"content.gambling": "critical"},
                     "groups": {"g2": {"severity": {"content.*": "low"}}}})
    result = run([msg(MON_10), msg(MON_10, group="g2")], policy)
    got = {(f["group_id"], f["rule"]): f for f in result.findings}
    assert got[("g1", "content.gambling")]["severity"] == "critical"
    assert got[("g2", "content.gambling")]["severity"] == "low"
    v1, v2 = got[("g1", "content.gambling")]["policy_version"], got[("g2", "content.gambling")]["policy_version"]
    assert v1 == policy.version("o", "g1") and v2 == policy.version("o", "g2") and v1 != v2
    assert Policy({"severity": {"content.gambling": "critical"}}).version("o", "g1") == v1, "stable"
    # low content findings count only when confirmed: g2's post is no strike
    assert [f["group_id"] for f in result.findings if f["rule"] == "sanction.warn"] == ["g1"]
    with pytest.raises(ConfigError, match=r"policy: severity.rules: 'contnt.\*' matches no rule"):
        Policy({"severity": {"contnt.*": "low"}})


def test_a_groups_override_merges_key_by_key():
    policy = Policy({
        "content": {"quiet_hours": {"start": "23:30", "end": "07:30"}, "lexicon": {"add": {"ad": ["代理加盟"]}}},
        "orgs": {"o": {"content": {"lexicon": {"remove": ["黄色"]}}}},
        "groups": {"g1": {"content": {"quiet_hours": {"start": "21:00"}, "lexicon": {"allow": ["黄色预警"]}}},
                   "g2": {"content": {"quiet_hours": None}}}})
    g1 = policy.content_for("o", "g1")
    assert (g1.quiet_hours.start, g1.quiet_hours.end) == ("21:00", "07:30"), "the org's end is kept"
    assert g1.lexicon.add == {"ad": ("代理加盟",)} and g1.lexicon.remove == ("黄色",)
    assert g1.lexicon.allow == ("黄色预警",)
    assert policy.content_for("o", "g2").quiet_hours is None, "null switches a setting off"
    assert policy.content_for("other", "g3").quiet_hours.start == "23:30"


def test_policy_show_prints_a_groups_effective_policy_and_its_version(tmp_path, capsys):
    import yaml

    pol = tmp_path / "policy.yaml"
    pol.write_text('groups: {g1: {content: {quiet_hours: {start: "21:00"}}, severity: {flood.*: low}}}\n',
                   encoding="utf-8")
    assert main(["policy", "show", "--policy", str(pol), "--org", "o", "--group", "g1"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["policy_version"] == load_policy(pol).version("o", "g1")
    assert shown["content"]["quiet_hours"] == {"start": "21:00", "end": "06:30", "tz": "Asia/Shanghai"}
    assert shown["severity"] == {"flood.*": "low"} and shown["sanctions"]["window_days"] == 30
    assert [s["action"] for s in shown["sanctions"]["steps"]] == ["warn", "mute", "remove"]


# --- learning from verdicts -----------------------------------------------------------------------

def test_false_positives_in_one_context_become_a_suggested_allow_entry(tmp_path):
    tok = get_tokenizer()
    text = "这台二手相机成色不错"
    start = text.index("手相")
    assert context_of(text, (start, start + 2), tok) == "二手相机"
    ev = orjson.dumps({"matches": [{"term": "手相", "field": "text", "span": [start, start + 2]}]}).decode()
    cult = orjson.dumps({"matches": [{"term": "算命", "field": "text", "span": [0, 2]}]}).decode()
    reviewed = [("o", "content.cult", ev, text, "false_positive"),
                ("o", "content.cult", ev, text + "吗", "false_positive"),
                ("o", "content.cult", cult, "算命的说我今年有财运", "false_positive"),
                ("o", "content.cult", cult, "算命先生来了", "confirmed"),
                ("p", "content.cult", ev, text, "false_positive")]
    found = suggest(reviewed, tok, min_count=2)
    assert [(s.org_id, s.context, s.false_positives, s.allow) for s in found] == [("o", "二手相机", 2, True)]
    pol = tmp_path / "policy.yaml"
    pol.write_text("# our rules\ncontent:\n  max_chars: 300  # longer posts are fine here\n", encoding="utf-8")
    assert accept(pol, found) == 1 and accept(pol, found) == 0, "accepting twice adds nothing"
    written = pol.read_text(encoding="utf-8")
    assert "# our rules" in written and "# longer posts are fine here" in written, "comments are kept"
    assert load_policy(pol).content_for("o", "g").lexicon.allow == ("二手相机",)
    assert load_policy(pol).content_for("p", "g").lexicon.allow == (), "only for the org that taught it"


def test_replay_prints_the_final_state_and_all_of_it_with_all(tmp_path, capsys):
    a, b = msg(MON_10), msg(MON_10 + HOUR, "你这个傻逼，会不会干活")
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(orjson.dumps(e) for e in [a, b, verdict(MON_10 + 2 * HOUR, fid_of(a),
                                                                          "false_positive")]))
    assert main(["replay", str(events)]) == 0
    final = [orjson.loads(line)["rule"] for line in capsys.readouterr().out.splitlines()]
    assert main(["replay", str(events), "--all"]) == 0
    everything = [orjson.loads(line)["rule"] for line in capsys.readouterr().out.splitlines()]
    # the warning the withdrawn finding caused stands; the insult is the only strike left
    assert sorted(final) == ["content.insult", "sanction.warn"]
    assert sorted(everything) == ["content.gambling", "content.insult", "sanction.warn"]


def test_a_finding_about_the_group_itself_gets_its_status_and_sanctions_nobody():
    """group.* findings name no member (user_id ""): their strike fact is valid input for the
    ladder (in the stream it was a dead letter: the schema wanted a member), a verdict sets their
    status, and no sanction is issued against an empty member."""
    from pipeline.detectors import Context
    from pipeline.review.ladder import LadderStage, strike_fact
    from schemas.records import make_finding, validate_event

    t0 = 1_790_000_000_000
    # even where an org counts the group rules as strikes, there is no member to warn
    ladder = LadderStage(Policy({"sanctions": {"rules": ["group.*"], "steps": [{"strikes": 1, "action": "warn"}]}}))
    state = None
    for i in range(3):
        finding = make_finding("group.idle", "medium", "o1", "g1", f"m{i}", "", t0 + i, {"idle_days": 95})
        strike = validate_event(strike_fact(finding))  # what the worker checks before the ladder sees it
        state = ladder.on_event(strike, state, Context(t0 + i)).state
    verdict = {"kind": "verdict", "event_id": "vd-fb1", "org_id": "o1", "ts": t0 + 10, "finding_id":
               finding["finding_id"], "verdict": "false_positive", "actor_id": "rev", "note": "", "feedback_id": "fb1"}
    state = ladder.on_event(verdict, state, Context(t0 + 10)).state
    out = ladder.tick("k", state, Context(t0 + 60_000))
    found, rows = out.findings, out.rows
    statuses = [r for t, r in rows if t == "finding_status"]
    assert [(s["finding_id"], s["status"], s["user_id"]) for s in statuses] == [
        (finding["finding_id"], "false_positive", "")]
    assert not [f for f in found if f["rule"].startswith("sanction.")]
    assert not [r for t, r in rows if t == "deadletter"]
