import pytest

from schemas.records import SchemaError, finding_id, make_finding, validate_event

MSG = {"kind": "message", "event_id": "e1", "org_id": "o", "ts": 1_793_498_400_000, "platform": "wecom",
       "group_id": "g", "msg_id": "m1", "sender_id": "u1", "text": "收到"}


def test_defaults_filled_and_unknown_fields_kept_as_extra():
    ev = validate_event({**MSG, "client_version": "4.1", "device": {"os": "ios"}})
    assert ev["sender_role"] == "member" and ev["msg_type"] == "text" and ev["mentions"] == ()
    assert ev["extra"] == {"client_version": "4.1", "device": {"os": "ios"}}


@pytest.mark.parametrize("change, message", [
    ({"ts": "yesterday"}, "message.ts: expected epoch milliseconds (integer), got str"),
    ({"ts": True}, "message.ts: expected epoch milliseconds (integer), got bool"),
    ({"ts": 1_700_000_000}, "message.ts: 1700000000 is not epoch milliseconds between 2000 and 2100"),
    ({"group_id": None}, "message.group_id: missing"),
    ({"event_id": ""}, "message.event_id: must not be empty"),
    ({"platform": "icq"}, "message.platform: 'icq' is not one of wechat, wecom, qq, dingtalk, feishu"),
    ({"mentions": "@all"}, "message.mentions: expected a list of strings"),
    ({"kind": "telegram"}, "kind: 'telegram' is not one of message, member, group, roster, feedback"),
])
def test_invalid_events_name_the_field(change, message):
    with pytest.raises(SchemaError) as exc:
        validate_event({**MSG, **change})
    assert str(exc.value) == message


def test_text_over_the_limit_is_rejected():
    with pytest.raises(SchemaError, match="message.text: 11 characters, over the limit of 10"):
        validate_event({**MSG, "text": "刷" * 11}, max_text_chars=10)


def test_every_kind_validates():
    base = {"event_id": "e", "org_id": "o", "ts": 1_793_498_400_000}
    validate_event({**base, "kind": "member", "group_id": "g", "user_id": "u", "action": "join"})
    validate_event({**base, "kind": "group", "group_id": "g", "action": "create", "registered": True})
    validate_event({**base, "kind": "roster", "user_id": "u", "name": "张三", "status": "left"})
    validate_event({**base, "kind": "feedback", "finding_id": "ab" * 12, "verdict": "false_positive"})
    with pytest.raises(SchemaError, match="feedback.finding_id: 'f1' is not a finding id"):
        validate_event({**base, "kind": "feedback", "finding_id": "f1", "verdict": "confirmed"})
    with pytest.raises(SchemaError, match="group.registered: expected true or false"):
        validate_event({**base, "kind": "group", "group_id": "g", "action": "create", "registered": "yes"})


def test_finding_id_is_deterministic_and_distinguishes_its_parts():
    a = finding_id("flood.repeat", "g1", "m1", "u1")
    assert a == finding_id("flood.repeat", "g1", "m1", "u1")
    assert a != finding_id("flood.repeat", "g1", "m1", "u2")
    assert a != finding_id("flood.rate", "g1", "m1", "u1")
    f = make_finding("content.ad", "medium", "o", "g1", "m1", "u1", 5, {"term": "代开发票"})
    assert set(f) == {"finding_id", "rule", "severity", "org_id", "group_id", "msg_id", "user_id", "ts", "evidence",
                      "policy_version"}
    # The first half names (group, member): a verdict finds its member's ladder from the id alone.
    assert a[:12] == finding_id("content.ad", "g1", "m9", "u1")[:12] != finding_id("content.ad", "g2", "m1", "u1")[:12]
