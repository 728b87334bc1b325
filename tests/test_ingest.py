import base64

import orjson

from pipeline.ingest import decode_record
from schemas.rows import Source

SRC = Source("qg.events", 3, 41)
EV = {"kind": "message", "event_id": "e1", "org_id": "o", "ts": 1_793_498_400_000, "platform": "qq",
      "group_id": "g", "msg_id": "m1", "sender_id": "u1", "text": "大家好"}


def test_single_event():
    d = decode_record(orjson.dumps(EV), SRC, 1000)
    assert [e["event_id"] for e, _ in d.events] == ["e1"] and d.dead == []


def test_envelope_dead_letters_only_the_bad_element():
    batch = [EV, {**EV, "event_id": "e2", "ts": "x"}, {**EV, "event_id": "e3"}]
    d = decode_record(orjson.dumps(batch), SRC, 1000)
    assert [e["event_id"] for e, _ in d.events] == ["e1", "e3"]
    assert [s.index for _, s in d.events] == [0, 2]
    [dl] = d.dead
    assert dl["error"] == "message.ts: expected epoch milliseconds (integer), got str"
    assert dl["src_index"] == 1 and dl["src_offset"] == 41 and orjson.loads(dl["raw"])["event_id"] == "e2"


def test_invalid_utf8_is_kept_as_base64():
    raw = b'{"kind":"message","text":"\xff\xfe"}'
    [dl] = decode_record(raw, SRC, 1000).dead
    assert dl["raw_encoding"] == "base64" and base64.b64decode(dl["raw"]) == raw
    assert dl["error"].startswith("invalid JSON")


def test_broken_json_empty_and_non_object():
    assert decode_record(b'{"kind": "mess', SRC, 1000).dead[0]["error"].startswith("invalid JSON")
    assert decode_record(b"", SRC, 1000).dead[0]["error"] == "empty record"
    assert decode_record(b"[]", SRC, 1000).dead[0]["error"] == "empty batch envelope"
    assert decode_record(b"42", SRC, 1000).dead[0]["error"] == "event: expected a JSON object, got int"


def test_one_megabyte_text_is_dead_lettered_whole():
    raw = orjson.dumps({**EV, "text": "刷" * 350_000})
    [dl] = decode_record(raw, SRC, 100_000).dead
    assert "350000 characters, over the limit of 100000" in dl["error"]
    assert dl["raw"].encode() == raw


def test_a_producer_cannot_send_qunguards_own_kind():
    fact = orjson.dumps({"kind": "membership", "event_id": "f1", "org_id": "o", "ts": 1_763_700_000_000,
                         "group_id": "g", "user_id": "u", "action": "join"})
    out = decode_record(fact, Source("qg.events", 0, 1), 1000)
    assert out.events == [] and "producers cannot send it" in out.dead[0]["error"]
    assert len(decode_record(fact, Source("qg.events", 0, 1), 1000, internal=True).events) == 1


def test_poison_that_cannot_be_stored_or_sent_is_a_dead_letter_that_fits():
    from schemas.rows import DEADLETTER_TOPIC_RAW, deadletter_message

    deep = (b'{"kind":"roster","event_id":"d","org_id":"o","ts":1763700000000,"user_id":"u","name":"n",'
            b'"x":' + b"[" * 300 + b"1" + b"]" * 300 + b"}")
    [dl] = decode_record(deep, Source("qg.events", 0, 1), 1000).dead
    assert "unknown fields cannot be stored" in dl["error"]
    huge = decode_record(b"\xff" * 3_500_000, Source("qg.events", 0, 2), 1000).dead[0]
    msg = deadletter_message(huge)
    assert huge["raw_size"] == 3_500_000 and len(huge["raw"]) > 4_000_000  # the table keeps it all
    assert msg["truncated"] and len(msg["raw"]) == DEADLETTER_TOPIC_RAW and len(orjson.dumps(msg)) < 100_000
    big_ts = decode_record(b'{"kind":"roster","event_id":"b","org_id":"o","ts":1' + b"0" * 30
                           + b',"user_id":"u","name":"n"}', Source("qg.events", 0, 3), 1000).dead[0]
    assert "is not epoch milliseconds between 2000 and 2100" in big_ts["error"]
