"""Every captured OneBot v11 and WeCom archive payload (tests/data/payloads/) maps to the events a
reader of the payload expects, and each event is one the pipeline accepts (validate_event)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.adapters.onebot import Unmappable, map_payload, parse_cq
from pipeline.adapters.wecom import READERS, map_record
from schemas.records import validate_event

PAYLOADS = Path(__file__).parent / "data" / "payloads"


def load(name: str):
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def one(events: list[dict]) -> dict:
    assert len(events) == 1
    e = validate_event(events[0])
    return {**e, "mentions": list(e["mentions"]), "urls": list(e["urls"])} if e["kind"] == "message" else e


def group_message(segments, **over) -> dict:
    return {"time": 1735044726, "self_id": 1, "post_type": "message", "message_type": "group", "sub_type": "normal",
            "message_id": 7, "group_id": 42, "user_id": 9, "message": segments,
            "sender": {"user_id": 9, "nickname": "张伟", "card": "技术部-张伟", "role": "member"}, **over}


# --- OneBot -----------------------------------------------------------------------------------

def test_napcat_doc_message_with_a_numeric_at():
    e = one(map_payload(load("onebot_group_message_napcat_doc.json"), "o1"))
    assert (e["platform"], e["group_id"], e["msg_id"], e["sender_id"]) == ("qq", "987654321", "2002", "345678901")
    assert (e["text"], e["mentions"]) == ("大家好！", ["123456789"])
    assert (e["sender_name"], e["sender_role"]) == ("管理员", "admin")
    assert e["ts"] == 1718000001000 and e["event_id"] == "qq:123456789:2002"


def test_napcat_capture_at_text_image_array_and_string_agree():
    p = load("onebot_group_message_napcat_capture_at_text_image.json")
    e = one(map_payload(p, "o1"))
    assert (e["msg_type"], e["text"], e["mentions"]) == ("text", "/bot", ["168238719"])
    assert e["sender_name"] == "除了摸鱼什么都做不到" and e["sender_role"] == "owner"
    assert e["urls"] == []  # the image's CDN link is no link a member posted
    as_string = one(map_payload({**p, "message": p["raw_message"]}, "o1"))
    assert {k: as_string[k] for k in ("msg_type", "text", "mentions")} == {k: e[k] for k in ("msg_type", "text",
                                                                                               "mentions")}


def test_napcat_reply():
    e = one(map_payload(load("onebot_group_message_napcat_capture_reply.json"), "o1"))
    assert (e["reply_to"], e["text"], e["group_id"]) == ("1381063063", "啊啊啊啊", "984466158")


def test_spec_array_and_string_forms_are_the_same_segments():
    array = load("onebot_message_array_example.json")
    string = (PAYLOADS / "onebot_message_string_example.txt").read_text(encoding="utf-8").strip()
    assert parse_cq(string) == array
    e = one(map_payload(group_message(array), "o1"))
    assert (e["msg_type"], e["text"]) == ("text", "[第一部分] 图片之后的部分，表情：")


def test_every_spec_segment_maps():
    segments = load("onebot_segments_spec_examples.json")
    for seg in segments:
        e = one(map_payload(group_message([seg]), "o1"))
        want = {"text": "text", "face": "sticker", "image": "image", "at": "text", "reply": "text", "xml": "card",
                "json": "card"}[seg["type"]]
        assert e["msg_type"] == want, seg
    at_all = one(map_payload(group_message([load("onebot_segment_at_all.assembled.json"),
                                            {"type": "text", "data": {"text": "开会"}}]), "o1"))
    assert at_all["mentions"] == ["@all"]


def test_cards_give_their_text_and_links():
    mini = one(map_payload(group_message([load("onebot_segment_json_miniapp01.assembled.json")]), "o1"))
    assert mini["msg_type"] == "mini_program"
    assert "[QQ小程序]" in mini["text"] and "哔哩哔哩" in mini["text"]
    assert any(u.startswith("https://b23.tv") or "bilibili" in u for u in mini["urls"]), mini["urls"]
    cq = (PAYLOADS / "onebot_segment_json_cqcode_gocqhttp.txt").read_text(encoding="utf-8").strip()
    card = one(map_payload(group_message(cq), "o1"))
    assert card["msg_type"] == "mini_program" and "[应用]" in card["text"]  # app com.tencent.miniapp
    red = one(map_payload(group_message([load("onebot_segment_redbag_gocqhttp.assembled.json")]), "o1"))
    assert (red["msg_type"], red["text"]) == ("red_packet", "恭喜发财")
    share = one(map_payload(group_message("[CQ:share,url=https://x.cn/a,title=内部资料]"), "o1"))
    assert (share["msg_type"], share["text"], share["urls"]) == ("link", "内部资料", ["https://x.cn/a"])
    file = one(map_payload(group_message([{"type": "file", "data": {"name": "工资表.xlsx", "file": "abc"}}]), "o1"))
    assert (file["msg_type"], file["file_name"]) == ("file", "工资表.xlsx")
    fwd = one(map_payload(group_message([{"type": "forward", "data": {"id": "123"}}]), "o1"))
    assert fwd["msg_type"] == "card"
    empty = one(map_payload(group_message([]), "o1"))  # NapCat's red packet
    assert empty["msg_type"] == "system"


def test_notices():
    inc = one(map_payload(load("onebot_notice_group_increase_invite_napcat_doc.json"), "o1"))
    assert (inc["kind"], inc["action"], inc["user_id"], inc["actor_id"]) == ("member", "join", "345678902", "123456789")
    appr = one(map_payload(load("onebot_notice_group_increase_approve_capture.json"), "o1"))
    assert (appr["action"], appr["actor_id"], appr["extra"]["sub_type"]) == ("join", "2631018780", "approve")
    kick = one(map_payload(load("onebot_notice_group_decrease_kick_capture.json"), "o1"))
    assert (kick["action"], kick["user_id"], kick["actor_id"]) == ("kick", "3930909243", "2631018780")
    leave = one(map_payload({**load("onebot_notice_group_decrease_kick_capture.json"), "sub_type": "leave",
                             "operator_id": 0}, "o1"))
    assert (leave["action"], leave["actor_id"]) == ("leave", "3930909243")
    card = one(map_payload(load("onebot_notice_group_card_gocqhttp.assembled.json"), "o1"))
    assert (card["action"], card["nickname"], card["user_id"]) == ("nickname", "新名片", "12345678")
    admin = one(map_payload(load("onebot_notice_group_admin.assembled.json"), "o1"))
    assert (admin["action"], admin["role"]) == ("role", "admin")
    recall = one(map_payload(load("onebot_notice_group_recall.assembled.json"), "o1"))
    assert (recall["msg_type"], recall["reply_to"], recall["sender_id"]) == ("recall", "123456", "12345678")
    lucky = one(map_payload(load("onebot_notice_notify_lucky_king.assembled.json"), "o1"))
    assert lucky["msg_type"] == "system" and lucky["extra"]["notice"]["target_id"] == 87654321
    ban = one(map_payload({"time": 1735044726, "self_id": 1, "post_type": "notice", "notice_type": "group_ban",
                           "sub_type": "ban", "group_id": 5, "operator_id": 2, "user_id": 3, "duration": 600}, "o1"))
    assert (ban["msg_type"], ban["sender_id"], ban["extra"]["notice"]["duration"]) == ("system", "2", 600)
    # the same notice delivered twice is one event
    assert map_payload(load("onebot_notice_group_admin.assembled.json"), "o1") == map_payload(
        load("onebot_notice_group_admin.assembled.json"), "o1")


@pytest.mark.parametrize("payload,reason", [
    ("onebot_http_post_private_message_spec.json", "'private' message"),
    ({"post_type": "request", "request_type": "group"}, "requests are not mapped"),
    ({"post_type": "notice", "notice_type": "friend_add"}, "notice 'friend_add'"),
    ({"post_type": "nonsense"}, "post_type 'nonsense'"),
    ([1, 2], "a JSON object"),
    ({"post_type": "message", "message_type": "group", "time": 1, "group_id": 1, "user_id": 2}, "without message_id"),
    ({"post_type": "message", "message_type": "group", "time": 1, "group_id": 1, "message_id": 3, "user_id": 2,
      "message": 17}, "neither a CQ-code string"),
])
def test_what_cannot_be_mapped_says_why(payload, reason):
    with pytest.raises(Unmappable, match=reason):
        map_payload(load(payload) if isinstance(payload, str) else payload, "o1")


def test_keepalives_are_no_events():
    assert map_payload({"post_type": "meta_event", "meta_event_type": "heartbeat", "time": 1}, "o1") == []


# --- WeCom archive ----------------------------------------------------------------------------

ARCHIVE = sorted(p.name for p in PAYLOADS.glob("wecom_archive_*.json"))
EXPECTED = {  # msgtype → (msg_type, a piece of the text, or None)
    "agree": ("system", None), "calendar": ("card", "业绩复盘会"), "card": ("card", "微信联系人"),
    "chatrecord": ("card", "test2"), "collect": ("card", "表项1"), "docmsg": ("link", "测试&演示客户"),
    "emotion": ("sticker", None), "external_redpacket": ("red_packet", "恭喜发财"), "file": ("file", None),
    "image": ("image", None), "link": ("link", "邀请你加入群聊"), "location": ("card", "管理中心"),
    "markdown": ("text", "请前往系统查看"), "meeting": ("card", "夕会"), "meeting_voice_call": ("system", None),
    "mixed": ("text", "你好"), "news": ("link", "service"), "redpacket": ("red_packet", "恭喜发财"),
    "revoke": ("recall", None), "sphfeed": ("link", "盖尔默缆车"), "switch": None, "text": ("text", "test"),
    "todo": ("card", "UNCONFIRMED content"), "video": ("video", None), "voice": ("voice", None),
    "voip_doc_share": ("file", None), "vote": ("card", "UNCONFIRMED title"), "weapp": ("mini_program", "服务须知"),
}


def test_every_archive_msgtype_is_read():
    assert set(READERS) | {"switch"} >= set(EXPECTED)
    assert {n.removeprefix("wecom_archive_").split(".")[0] for n in ARCHIVE} == set(EXPECTED)


@pytest.mark.parametrize("name", ARCHIVE)
def test_every_archive_record_maps(name):
    record = load(name)
    kind = name.removeprefix("wecom_archive_").split(".")[0]
    want = EXPECTED[kind]
    if want is None:
        with pytest.raises(Unmappable, match="switch"):
            map_record(record, "o1")
        return
    if not record.get("roomid"):  # most published examples are one-to-one chats
        with pytest.raises(Unmappable, match="one-to-one"):
            map_record(record, "o1")
        record = {**record, "roomid": "wrTEST"}
    if not record.get("msgtime"):  # the image example's msgtime is 0
        with pytest.raises(Unmappable, match="msgtime"):
            map_record(record, "o1")
        record = {**record, "msgtime": 1603875600000}
    e = one(map_record({**record, "seq": 196}, "o1"))
    assert (e["platform"], e["group_id"], e["msg_id"], e["sender_id"]) == ("wecom", record["roomid"], record["msgid"],
                                                                            record["from"])
    assert e["ts"] == record["msgtime"] and e["event_id"] == f"wecom:{record['msgid']}"
    assert e["msg_type"] == want[0], (name, e)
    if want[1] is not None:
        assert want[1] in e["text"], (name, e["text"])
    assert e["extra"]["archive_seq"] == 196


def test_archive_specifics():
    link = one(map_record({**load("wecom_archive_link.json"), "roomid": "wr1"}, "o1"))
    assert link["urls"] == ["https://work.weixin.qq.com/wework_admin/external_room/join/exceed?vcode=xxx"]
    file = one(map_record({**load("wecom_archive_file.json"), "roomid": "wr1"}, "o1"))
    assert file["file_name"] == "资料.docx"
    revoke = one(map_record({**load("wecom_archive_revoke.json"), "roomid": "wr1"}, "o1"))
    assert revoke["reply_to"] == "14822339130656386894_1603875600"
    sph = one(map_record({**load("wecom_archive_sphfeed.json"), "roomid": "wr1"}, "o1"))
    assert sph["extra"]["archive_origin"] == "external"
    with pytest.raises(Unmappable, match="msgtype 'hologram'"):
        map_record({**load("wecom_archive_text.json"), "roomid": "wr1", "msgtype": "hologram"}, "o1")
    with pytest.raises(Unmappable, match="without its 'text' body"):
        map_record({**load("wecom_archive_text.json"), "roomid": "wr1", "text": None}, "o1")


def test_a_group_member_list_is_the_group_and_its_joins():
    answer = {**load("wecom_msgaudit_groupchat_get_response.json"), "roomid": "wrNplhCgAAIVZohLe57zKnvIV7xBKrig"}
    events = [validate_event(e) for e in map_record(answer, "o1")]
    assert [(e["kind"], e.get("action"), e.get("user_id"), e["ts"]) for e in events] == [
        ("group", "create", None, 1592361604000), ("member", "join", "ZhangWenChao", 1592361605000),
        ("member", "join", "xujinsheng", 1592377076000)]
    assert events[0]["name"] == "蓦然回首" and events[0]["owner_id"] == "ZhangWenChao"
    assert map_record(answer, "o1") == map_record(answer, "o1")  # pulled again: the same events
    with pytest.raises(Unmappable, match="needs the roomid"):
        map_record(load("wecom_msgaudit_groupchat_get_response.json"), "o1")
    with pytest.raises(Unmappable, match="301052"):
        map_record({"errcode": 301052, "errmsg": "会话存档已过期", "members": []}, "o1")


# --- the demo's OneBot traffic ----------------------------------------------------------------

def test_simulated_traffic_as_onebot_maps_back_to_the_same_events():
    """`demo --onebot` and bench_bridge send the simulator's traffic as OneBot frames; through the
    bridge's mapping each must come back as the event it was made from (QQ numbers for names)."""
    from pipeline.devtools.onebot_traffic import to_onebot
    from pipeline.devtools.simulate import Simulator

    sim = list(Simulator(orgs=1, groups=6, members=8, seed=3).events(3000))
    messages = [e for e in sim if e["kind"] == "message"]
    frames = [f for kind, f in to_onebot(sim) if kind == "frame"]
    mapped = [validate_event(e) for f in frames for e in map_payload(f, "org1")]
    back = [e for e in mapped if e["kind"] == "message"]
    assert len(back) == len(messages) > 1000
    for ours, theirs in zip(messages, back, strict=True):
        assert theirs["ts"] == ours["ts"] // 1000 * 1000  # OneBot's time is seconds
        assert theirs["msg_type"] == ours.get("msg_type", "text"), (ours, theirs)
        assert len(theirs["mentions"]) == len(ours.get("mentions") or ())
        if ours.get("msg_type", "text") == "text":
            assert theirs["text"] == ours["text"]
    assert {type(f["message"]) for f in frames if f["post_type"] == "message"} == {list, str}
    joins = sum(e["kind"] == "member" and e["action"] == "join" for e in sim)
    assert sum(e["kind"] == "member" and e["action"] == "join" for e in mapped) == joins
