"""Personal data is found in the clear and stored masked (content.mask_stored, on by default for
ID-card and bank numbers): what a reader of messages or raw_events sees."""

from __future__ import annotations

import orjson

from pipeline.config import load_config
from pipeline.engine import Engine
from pipeline.policy import Policy
from pipeline.processor import Processor
from schemas.rows import MESSAGE_COLUMNS, RAW_COLUMNS, Source

ID = "110101199003074258"
BANK = "6222021234567894"
MOBILE = "13912345678"
TEXT = f"我的身份证{ID}，卡号{BANK}，电话{MOBILE}"


def _store(policy: Policy, text: str = TEXT):
    ev = {"kind": "message", "event_id": "e1", "org_id": "o1", "ts": 1_790_000_000_000, "platform": "wecom",
          "group_id": "g1", "msg_id": "m1", "sender_id": "u1", "text": text}
    batch = Processor(load_config(env={}), Engine(policy)).process([(orjson.dumps(ev), Source("qg.events", 0, 0))])
    msg = dict(zip(MESSAGE_COLUMNS, batch.rows["messages"][0], strict=True))
    raw = dict(zip(RAW_COLUMNS, batch.rows["raw_events"][0], strict=True))
    return batch, msg, raw


def test_id_card_and_bank_numbers_are_stored_masked_and_still_found():
    batch, msg, raw = _store(Policy())
    stored = msg["text"] + raw["payload"] + " ".join(msg["tokens"])
    assert ID not in stored and BANK not in stored and "19900307" not in stored
    assert "1101" in msg["text"] and "4258" in msg["text"] and "*" in msg["text"]  # as evidence shows it
    assert MOBILE in msg["text"]  # not among the default kinds
    assert orjson.loads(raw["payload"])["text"] == msg["text"]
    kinds = {p["kind"] for f in batch.findings if f["rule"] == "content.pii" for p in f["evidence"]["personal"]}
    assert {"id_card", "bank_card"} <= kinds  # detection saw the clear text


def test_an_org_can_mask_more_kinds_or_none():
    _, msg, _ = _store(Policy({"orgs": {"o1": {"content": {"mask_stored": ["id_card", "bank_card", "mobile"]}}}}))
    assert MOBILE not in msg["text"] and ID not in msg["text"]
    _, msg, raw = _store(Policy({"content": {"mask_stored": []}}))
    assert msg["text"] == TEXT and ID in raw["payload"]


def test_a_message_without_personal_data_is_stored_as_sent():
    _, msg, _ = _store(Policy(), "订单号 20261201123456，明天 9:30 开会")
    assert msg["text"] == "订单号 20261201123456，明天 9:30 开会"


def test_masking_keeps_the_length_so_the_evidence_still_points_at_it():
    text = f"转账到 {BANK[:4]} {BANK[4:8]} {BANK[8:12]} {BANK[12:]}，联系 +86 139-1234-5678 或 zhang.wei@example.com"
    batch, msg, _ = _store(Policy({"content": {"mask_stored": ["bank_card", "mobile", "email"]}}), text)
    assert len(msg["text"]) == len(text) and BANK[8:12] not in msg["text"] and "1234-5678" not in msg["text"]
    assert "zhang.wei" not in msg["text"] and "@example.com" in msg["text"] and f" {BANK[12:]}，" in msg["text"]
    spans = [p["span"] for f in batch.findings if f["rule"] == "content.pii" for p in f["evidence"]["personal"]]
    assert spans and all("*" in msg["text"][a:b] for a, b in spans)
