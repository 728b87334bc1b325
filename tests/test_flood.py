"""flood.repeat and flood.rate: the pure detector through the Engine, as replay and the worker run it."""

from __future__ import annotations

import itertools

import pytest

from pipeline.config import ConfigError
from pipeline.detectors import flood
from pipeline.engine import Engine
from pipeline.policy import Policy
from schemas.records import validate_event

T0 = 1_793_498_400_000 + 3_600_000  # 2026-11-02 10:00 Asia/Shanghai
_ids = itertools.count(1)


def msg(text: str = "", at_s: float = 0, sender: str = "u1", group: str = "g", **extra) -> dict:
    n = next(_ids)
    return validate_event({"kind": "message", "event_id": f"e{n}", "org_id": "o", "ts": T0 + int(at_s * 1000),
                           "platform": "wecom", "group_id": group, "msg_id": extra.pop("msg_id", f"m{n}"),
                           "sender_id": sender, "text": text, **extra}, max_text_chars=100_000)


def floods(events: list[dict], policy: Policy | None = None, engine: Engine | None = None) -> list[dict]:
    engine = engine or Engine(policy)
    out = []
    for e in events:
        out += [f for f in engine.process(e, []).findings if f["rule"].startswith("flood.")]
    return out


# --- flood.repeat -------------------------------------------------------------------------------

def test_three_in_a_row_after_normalisation_is_one_episode_on_the_third():
    events = [msg("广告位招租!!!", 0), msg("广告位招租!!", 2), msg("广告位 招租", 4), msg("广告位招租", 6),
              msg("广告位招租！", 8)]
    [f] = floods(events)
    assert f["rule"] == "flood.repeat" and f["msg_id"] == events[2]["msg_id"]
    assert f["ts"] == events[2]["ts"] and f["user_id"] == "u1"
    assert f["evidence"]["normalized"] == "广告位招租" and f["evidence"]["count"] == 3
    assert f["evidence"]["first_ts"] == events[0]["ts"] and f["evidence"]["window_ms"] == 4000


def test_two_in_a_row_is_not_a_flood_and_a_different_message_ends_the_episode():
    events = [msg("顶", 0), msg("顶", 1), msg("今天开会吗", 2), msg("顶", 3), msg("顶", 4)]
    assert floods(events) == []
    # A second episode after a break is a second finding, on its own third message.
    events = [msg("顶", 0), msg("顶", 1), msg("顶", 2), msg("好的", 3), msg("顶", 4), msg("顶", 5), msg("顶", 6)]
    found = floods(events)
    assert [f["msg_id"] for f in found] == [events[2]["msg_id"], events[6]["msg_id"]]


def test_the_same_text_from_several_members_counts_and_names_who_completed_it():
    events = [msg("快来帮我砍一刀", 0, "u1"), msg("快来帮我砍一刀", 1, "u2"), msg("快来帮我砍一刀", 2, "u3")]
    [f] = floods(events)
    assert f["user_id"] == "u3"


def test_an_image_between_repeats_ends_the_episode():
    events = [msg("顶", 0), msg("顶", 1), msg("", 2, msg_type="image"), msg("顶", 3)]
    assert floods(events) == []


def test_groups_are_separate_even_when_their_messages_interleave():
    events = [msg("顶", 0, group="a"), msg("收工", 1, group="b"), msg("顶", 2, group="a"),
              msg("收工", 3, group="b"), msg("顶", 4, group="a")]
    [f] = floods(events)
    assert f["group_id"] == "a" and f["msg_id"] == events[4]["msg_id"]


def test_a_long_pause_ends_an_episode():
    # The same 已打卡 once a day is not a flood.
    events = [msg("已打卡", day * 86_400) for day in range(3)]
    assert floods(events) == []


def test_acknowledgements_of_an_open_notice_are_never_a_flood():
    notice = msg("【通知】明天上午九点全体人员开会，收到请回复", 0, "boss", mentions=["@all"])
    acks = [msg(t, i + 1, f"u{i}") for i, t in enumerate(["收到", "收到", "收到！", "收到", "已收到", "收到"])]
    quotes = [msg("好", 10 + i, f"v{i}", reply_to=notice["msg_id"]) for i in range(4)]
    assert floods([notice] + acks + quotes) == []


def test_acknowledgements_without_a_notice_that_asked_for_them_are_counted():
    # 没有要求回复的…请勿刷屏: the policies ask members not to answer what asked no answer.
    notice = msg("本周值班安排见附件，此条信息不必回复", 0, "boss")
    [f] = floods([notice, msg("收到", 1, "u1"), msg("收到", 2, "u2"), msg("收到", 3, "u3")])
    assert f["rule"] == "flood.repeat"


def test_a_notice_stays_open_for_the_policy_window_only():
    policy = Policy({"flood": {"notice_open_hours": 1}})
    notice = msg("请各位今天下班前提交安全检查表，收到请回复", 0, "boss")
    late = [msg("收到", 7200 + i, f"u{i}") for i in range(3)]
    assert len(floods([notice] + late, policy)) == 1


def test_out_of_order_arrivals_within_the_allowance_take_their_place():
    a, b, c = msg("顶", 0), msg("顶", 1), msg("顶", 2)
    other = msg("大家好", 1.5)
    # Arrival order b, c, a: in event time a b c form the run, c completes it.
    [f] = floods([b, c, a])
    assert f["msg_id"] == c["msg_id"]
    # A different message that belongs between b and c splits the run: no episode …
    assert floods([a, b, other, c]) == []
    # … unless the episode was reported before it arrived: a finding is never withdrawn.
    assert [f["msg_id"] for f in floods([a, b, c, other])] == [c["msg_id"]]


def test_an_event_later_than_the_allowance_is_left_out_of_counting():
    policy = Policy({"flood": {"late_seconds": 5}})
    events = [msg("顶", 100), msg("顶", 101), msg("顶", 50)]  # 50 s behind: too late
    assert floods(events, policy) == []


def test_a_redelivered_record_does_not_count_twice():
    # After a crash the worker re-reads records its restored state already holds.
    engine = Engine()
    events = [msg("顶", i) for i in range(3)]
    at = [(0, 10 + i, 0) for i in range(3)]
    assert engine.process(events[0], [], at[0]).findings == []
    assert engine.process(events[1], [], at[1]).findings == []
    # Re-reading the first two records changes nothing: without the guard, the second 顶 would be
    # counted as the third.
    assert engine.process(events[0], [], at[0]).findings == [] and engine.process(events[1], [], at[1]).findings == []
    [f] = [f for f in engine.process(events[2], [], at[2]).findings if f["rule"] == "flood.repeat"]
    assert f["msg_id"] == events[2]["msg_id"]
    # Re-read, the record that completed the episode changes nothing either: its finding was stored
    # before the state that holds it reached the changelog (pipeline/delivery/path.py).
    assert engine.process(events[2], [], at[2]).findings == []
    assert engine.stores["flood"]["g"][2] == [0, 12, 0]  # the envelope: version, state, position


# --- flood.rate ---------------------------------------------------------------------------------

def test_one_finding_per_burst_on_the_message_over_the_limit():
    events = [msg(f"第{i}条消息", i * 3) for i in range(25)]  # 20 a minute for 75 s
    [f] = floods(events)
    assert f["rule"] == "flood.rate" and f["msg_id"] == events[10]["msg_id"]
    assert f["evidence"]["messages"]["count"] == 11 and f["evidence"]["messages"]["limit"] == 10


def test_a_pause_ends_the_burst_and_the_next_burst_is_reported():
    first = [msg(f"A{i}", i) for i in range(11)]
    second = [msg(f"B{i}", 300 + i) for i in range(11)]
    found = floods(first + second)
    assert [f["msg_id"] for f in found] == [first[10]["msg_id"], second[10]["msg_id"]]


def test_senders_are_counted_apart_and_within_the_window_only():
    events = [msg(f"x{i}", i * 2, sender=f"u{i % 2}") for i in range(20)]  # two members, 10 each
    assert floods(events) == []
    slow = [msg(f"y{i}", i * 7) for i in range(30)]  # 8 or 9 a minute
    assert floods(slow) == []


def test_a_row_of_stickers_floods_sooner():
    events = [msg("[捂脸]" if i % 2 else "[强]", i * 2, msg_type="sticker") for i in range(6)]
    found = floods(events)
    [f] = [f for f in found if f["rule"] == "flood.rate"]
    assert f["msg_id"] == events[5]["msg_id"]
    # two stickers taking turns are also the same line interleaved with one other
    [r] = [f for f in found if f["rule"] == "flood.repeat"]
    assert r["msg_id"] == events[4]["msg_id"] and r["evidence"]["interleaved_with"]
    assert f["evidence"]["stickers"] == {"count": 6, "limit": 5, "window_s": 60, "first_ts": events[0]["ts"]}
    # Images count only towards the general limit: a report with six site photos is fine.
    photos = [msg("", i, msg_type="image") for i in range(6)]
    assert floods(photos) == []


# --- per-group policy, state, memory ------------------------------------------------------------

def test_thresholds_come_from_the_groups_policy():
    policy = Policy({"flood": {"repeat_count": 4},
                     "groups": {"strict": {"flood": {"repeat_count": 2, "rate_limit": 3}},
                                "relaxed": {"flood": {"disabled": ["flood.repeat"]}}}})
    assert floods([msg("顶", i) for i in range(3)], policy) == []
    assert len(floods([msg("顶", i) for i in range(4)], policy)) == 1
    assert [f["rule"] for f in floods([msg("顶", i, group="strict") for i in range(2)], policy)] == ["flood.repeat"]
    rate = floods([msg(f"m{i}", i, group="strict") for i in range(4)], policy)
    assert [f["rule"] for f in rate] == ["flood.rate"]
    assert floods([msg("顶", i, group="relaxed") for i in range(6)], policy) == []


def test_bad_flood_settings_stop_with_the_key_named():
    with pytest.raises(ConfigError, match=r"policy: groups\.g1\.flood\.repeat_count"):
        Policy({"groups": {"g1": {"flood": {"repeat_count": 1}}}})
    with pytest.raises(ConfigError, match=r"policy: flood\.disabled"):
        Policy({"flood": {"disabled": ["flood.repeats"]}})


def test_state_is_bounded_and_released_when_the_group_goes_quiet():
    engine = Engine()
    for i in range(500):  # a bot flooding the group
        engine.process(msg("顶" if i % 2 else f"刷{i}", i * 0.1), [])
    state = engine.stores["flood"]["g"][1]
    assert len(state[flood.TAIL]) <= 4 * 64 and len(state[flood.SENDERS]["u1"]) <= 1 + 2 * 22
    assert engine.tick(T0 + 60_000).findings == [] and "g" in engine.stores["flood"]
    engine.tick(T0 + 3_600_000)
    assert "g" not in engine.stores["flood"]


def test_near_duplicates_are_a_flood_and_a_growing_jielong_list_is_not():
    dodged = [msg(f"加微信领福利qg88{i}号", at_s=i * 5, sender=f"u{i}") for i in range(3)]
    [found] = [f for f in floods(dodged) if f["rule"] == "flood.repeat"]
    assert found["msg_id"] == dodged[2]["msg_id"] and found["evidence"]["count"] == 3
    roll = ["接龙：1.张三", "接龙：1.张三 2.李四", "接龙：1.张三 2.李四 3.王五", "接龙：1.张三 2.李四 3.王五 4.赵六"]
    assert [f for f in floods([msg(t, at_s=i * 5, sender=f"u{i}") for i, t in enumerate(roll)])
            if f["rule"] == "flood.repeat"] == []
    # messages that differ in what they say are not near duplicates
    times = ["明天上午九点在三楼开会", "明天上午十点在三楼开会", "明天下午两点在三楼开会"]
    assert [f for f in floods([msg(t, at_s=i * 5, sender=f"u{i}") for i, t in enumerate(times)])
            if f["rule"] == "flood.repeat"] == []


def test_a_line_interleaved_with_one_other_is_a_flood_and_a_conversation_is_not():
    dodge = [msg("加群领红包" if i % 2 == 0 else "。", i * 3, sender=f"u{i % 2}") for i in range(5)]
    # "。" folds to nothing: the text is kept as written, so it is a line of its own
    [f] = [f for f in floods(dodge) if f["rule"] == "flood.repeat"]
    assert f["msg_id"] == dodge[4]["msg_id"] and f["evidence"]["normalized"] == "加群领红包"
    assert f["evidence"]["interleaved_with"] and f["evidence"]["count"] == 3
    talk = [msg(t, i * 3, sender=f"u{i % 2}") for i, t in enumerate(["好的", "几点开始？", "好的", "九点", "好的"])]
    assert floods(talk) == []
    # A B A B B B: the B's then go on as a row of their own
    turns = [msg(t, i * 3) for i, t in enumerate(["通知一", "顶", "通知一", "顶", "顶", "顶"])]
    got = [(f["msg_id"], f["evidence"]["normalized"]) for f in floods(turns) if f["rule"] == "flood.repeat"]
    assert got == [(turns[5]["msg_id"], "顶")]


def test_where_the_tail_is_folded_changes_nothing_found():
    """The tail walk and the fold into the run summary share one step: a group whose messages all
    fold at once (late_seconds 0) and one that keeps them all (late_seconds 600) find the same."""
    import random

    rng = random.Random(3)
    lines = ["顶", "加群领红包", "好的", "。", "收到", "[强]"]
    events = [msg(rng.choice(lines[:3]) if rng.random() < 0.6 else rng.choice(lines), i * 2,
                  sender=f"u{rng.randrange(4)}") for i in range(400)]
    quick = Policy({"flood": {"late_seconds": 0, "rate_limit": 1000}})
    keep = Policy({"flood": {"late_seconds": 600, "rate_limit": 1000}})
    a = [(f["msg_id"], f["evidence"].get("interleaved_with")) for f in floods(events, quick)]
    b = [(f["msg_id"], f["evidence"].get("interleaved_with")) for f in floods(events, keep)]
    assert a == b and len(a) > 10 and any(alt for _, alt in a)


def test_the_in_order_step_finds_what_a_walk_of_the_whole_tail_finds():
    """A message in order steps the run at the end of the tail; a late one (and a changed policy)
    walks the tail again. Over random traffic with late arrivals, stickers, notices, timers and a
    policy change half way, both give the same findings as walking the whole tail every time."""
    import random

    lines = ["顶", "加群领红包", "好的", "。", "收到", "[强]", "加微信领福利qg881号", "加微信领福利qg882号",
             "请大家收到回复", ""]
    policies = [Policy({}), Policy({"flood": {"late_seconds": 0}}),
                Policy({"flood": {"late_seconds": 600, "rate_limit": 3}}),
                Policy({"flood": {"repeat_count": 2, "sticker_limit": 2, "rate_limit": 4}}),
                Policy({"flood": {"repeat_gap_seconds": 5, "late_seconds": 10}})]
    found = 0
    for seed in range(40):
        rng = random.Random(seed)
        events, ts = [], 0.0
        for _ in range(300):
            ts += rng.choice([0, 0.1, 0.5, 2, 5, 40])
            kind = rng.choice(["text"] * 6 + ["sticker", "image", "system"])
            late = rng.uniform(0, 45) if rng.random() < 0.15 else 0
            events.append(msg("" if kind == "image" else rng.choice(lines), ts - late, sender=f"u{rng.randrange(4)}",
                              group=f"g{rng.randrange(3)}", msg_type=kind,
                              **({"reply_to": events[-1]["msg_id"]} if events and rng.random() < 0.1 else {})))
        first, then = rng.sample(policies, 2)
        runs = []
        for incremental in (True, False):
            detector = flood.FloodDetector(first, incremental=incremental)
            engine = Engine(first, detectors=[detector])
            got = []
            for j, e in enumerate(events):
                if j == len(events) // 2:
                    detector.policy = engine.policy = then
                got += [(f["rule"], f["msg_id"], f["evidence"]) for f in engine.process(e, []).findings]
                if j % 25 == 0:
                    got += [(f["rule"], f["msg_id"], f["evidence"]) for f in engine.tick(engine.watermark).findings]
            runs.append(got)
        assert runs[0] == runs[1], seed
        found += len(runs[0])
    assert found > 300  # the traffic floods, so the comparison compares something


# A group's flood state as version 1 wrote it to the changelog (dicts): u1 has posted nine times in
# 32 s, u2 a sticker and 顶, u3 顶.
V1_STATE = (
    '{"org":"o","last":1793502041000,"tail":[[1793502012000,"第3条","m3","u1"],[1793502016000,"第4条","m4","u'
    '1"],[1793502020000,"第5条","m5","u1"],[1793502024000,"第6条","m6","u1"],[1793502028000,"第7条","m7","u1"],'
    '[1793502032000,"第8条","m8","u1"],[1793502038000,"微笑","m9","u2"],[1793502040000,"顶","m10","u2"],[17935'
    '02041000,"顶","m11","u3"]],"pre":{"k":"第2条","n":1,"t0":1793502008000,"t":1793502008000,"rep":false,"a'
    'lt":null,"last":"a","bm":null},"rep":[],"notices":[],"senders":{"u1":{"t":[[1793502000000,"m0"],[179'
    '3502004000,"m1"],[1793502008000,"m2"],[1793502012000,"m3"],[1793502016000,"m4"],[1793502020000,"m5"]'
    ',[1793502024000,"m6"],[1793502028000,"m7"],[1793502032000,"m8"]],"over":null},"u2":{"t":[[1793502038'
    '000,"m9"],[1793502040000,"m10"]],"over":null,"s":[[1793502038000,"m9"]],"sover":null},"u3":{"t":[[17'
    '93502041000,"m11"]],"over":null}}}'
)


def test_a_state_written_by_version_1_goes_on_as_if_never_rewritten():
    import orjson

    def tail(n0):
        return [msg("顶", 43, sender="u4", msg_id=f"m{n0}"), msg("第9条", 44, msg_id=f"m{n0 + 1}"),
                msg("第10条", 48, msg_id=f"m{n0 + 2}")] + [
            msg("[微笑]", 49 + i, sender="u2", msg_type="sticker", msg_id=f"m{n0 + 3 + i}") for i in range(5)]

    engine = Engine()
    engine.stores["flood"]["g"] = {"v": 1, "s": orjson.loads(V1_STATE), "at": None}
    engine.reindex()
    upgraded = [(f["rule"], f["msg_id"], f["evidence"]) for e in tail(12) for f in engine.process(e, []).findings]
    # the same history from the start, in this version
    history = [msg(f"第{i}条", i * 4, msg_id=f"m{i}") for i in range(9)] + [
        msg("[微笑]", 38, sender="u2", msg_type="sticker", msg_id="m9"), msg("顶", 40, sender="u2", msg_id="m10"),
        msg("顶", 41, sender="u3", msg_id="m11")]
    fresh = Engine()
    assert floods(history, engine=fresh) == []
    expected = [(f["rule"], f["msg_id"], f["evidence"]) for e in tail(12) for f in fresh.process(e, []).findings]
    assert upgraded == expected
    # the episode of 顶 completed by u4, u1's eleventh post in a minute, three of u2's stickers in a
    # row, and the sixth sticker of u2 in a minute
    assert [(rule, m) for rule, m, _ in upgraded] == [("flood.repeat", "m12"), ("flood.rate", "m14"),
                                                      ("flood.repeat", "m17"), ("flood.rate", "m19")]
    assert engine.stores["flood"]["g"][0] == flood.FloodDetector.state_version
