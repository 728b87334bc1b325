"""ClickHouse rows built from the records in `schemas.records`; column order matches the migrations."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from schemas.records import KINDS


@dataclass(frozen=True)
class Source:
    """Where a row came from in Kafka (or a file); the sink's exactly-once bookkeeping uses it."""

    topic: str
    partition: int
    offset: int
    index: int = 0  # position inside a batch envelope


Row = tuple[Any, ...]  # one ClickHouse row, in its table's column order

SRC_COLUMNS = ("src_topic", "src_partition", "src_offset", "src_index")

RAW_COLUMNS = ("event_id", "kind", "org_id", "group_id", "user_id", "ts", "payload") + SRC_COLUMNS

_MESSAGE_FIELDS = tuple(f.name for f in KINDS["message"])
MESSAGE_COLUMNS = ("event_id", "org_id") + _MESSAGE_FIELDS + ("tokens", "extra", "ts") + SRC_COLUMNS

FINDING_COLUMNS = (
    "finding_id", "rule", "severity", "org_id", "group_id", "msg_id", "user_id", "ts", "evidence", "policy_version",
) + SRC_COLUMNS

STATUS_COLUMNS = ("status_key", "finding_id", "org_id", "group_id", "user_id", "rule", "seq", "ts", "status",
                  "verdict", "actor_id", "note", "feedback_id") + SRC_COLUMNS

DEADLETTER_COLUMNS = ("dl_id", "error", "raw", "raw_encoding") + SRC_COLUMNS

NOTICE_COLUMNS = ("notice_key", "notice_id", "org_id", "group_id", "sender_id", "ts", "due", "basis",
                  "responders", "text") + SRC_COLUMNS

RESPONSE_COLUMNS = ("response_key", "notice_id", "org_id", "group_id", "user_id", "msg_id", "ts", "delay_ms",
                    "late", "how") + SRC_COLUMNS

MEMBERSHIP_COLUMNS = ("membership_key", "org_id", "group_id", "user_id", "seq", "ts", "present", "nickname",
                      "name", "department", "status", "nickname_bad", "departed", "external") + SRC_COLUMNS

ALERT_COLUMNS = ("alert_id", "kind", "channel", "org_id", "group_id", "rule", "severity", "ts", "count", "repeats",
                 "finding_ids", "payload") + SRC_COLUMNS

# Written by the notifier, not the worker's sink (no source position: an attempt is not an event).
DELIVERY_COLUMNS = ("attempt_id", "alert_id", "channel", "org_id", "attempt", "at", "status", "error", "latency_ms",
                    "message_id")

# Written by the OneBot bridge's enforcer (pipeline/adapters/enforce.py): one row per attempt.
ACTION_COLUMNS = ("action_id", "finding_id", "org_id", "group_id", "user_id", "action", "params", "attempt", "at",
                  "status", "retcode", "reply", "error")

# The key each table is deduplicated on (the first column of every row).
TABLES = {
    "raw_events": RAW_COLUMNS,
    "messages": MESSAGE_COLUMNS,
    "findings": FINDING_COLUMNS,
    "deadletter": DEADLETTER_COLUMNS,
    "notices": NOTICE_COLUMNS,
    "responses": RESPONSE_COLUMNS,
    "memberships": MEMBERSHIP_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "finding_status": STATUS_COLUMNS,
}
_FLAGS = frozenset({"late", "present", "nickname_bad", "departed", "external"})


def _src(src: Source) -> tuple[str, int, int, int]:
    return (src.topic, src.partition, src.offset, src.index)


def dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def json_bytes(obj: Any) -> bytes:
    """JSON to keep (in a list, in memory): orjson returns its bytes in a buffer rounded up to a
    power of two, 4 to 8 KB for a value of a few hundred bytes, and never shrinks it (measured
    here; home-assistant/core#181240 found the same). A right-sized copy costs far less than the
    memory: 12,000 facts of a batch held 100 MB, and faulting it in cost more than the copies."""
    return bytes(memoryview(orjson.dumps(obj)))


def raw_row(event: dict[str, Any], src: Source) -> Row:
    return (
        event["event_id"], event["kind"], event["org_id"], event.get("group_id") or "",
        event.get("user_id") or event.get("sender_id") or "", event["ts"], dumps(event),
    ) + _src(src)


_message_values = itemgetter(*_MESSAGE_FIELDS)


def message_row(event: dict[str, Any], tokens: list[str], src: Source) -> Row:
    values = [list(v) if type(v) is tuple else ("" if v is None else v) for v in _message_values(event)]
    return (event["event_id"], event["org_id"], *values, tokens, dumps(event["extra"]), event["ts"]) + _src(src)


def finding_row(finding: dict[str, Any], src: Source) -> Row:
    return tuple(
        dumps(finding["evidence"]) if c == "evidence" else (finding.get(c) or "")
        for c in FINDING_COLUMNS[:-4]
    ) + _src(src)


def alert_row(alert: dict[str, Any], src: Source) -> Row:
    return (alert["alert_id"], alert["kind"], alert["channel"], alert["org_id"], alert["group_id"], alert["rule"],
            alert["severity"], alert["ts"], alert["count"], alert["repeats"], list(alert["finding_ids"]),
            dumps(alert)) + _src(src)


def encode_raw(raw: bytes) -> tuple[str, str]:
    """Raw bytes as text: UTF-8 when they are, base64 otherwise (SPEC §2)."""
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


# A dead letter on the topic carries at most this much of the original (a record can be larger than
# the producer's limit once it is base64); the deadletter table keeps every byte.
DEADLETTER_TOPIC_RAW = 64 * 1024
ERROR_CHARS = 2_000


def deadletter_record(raw: bytes, error: str, src: Source) -> dict[str, Any]:
    """The dead letter as a row for ClickHouse (all of the original); `deadletter_message` is the
    topic's form of it."""
    text, encoding = encode_raw(raw)
    return {
        "dl_id": f"{src.topic}:{src.partition}:{src.offset}:{src.index}",
        "error": error[:ERROR_CHARS], "raw": text, "raw_encoding": encoding,
        "src_topic": src.topic, "src_partition": src.partition,
        "src_offset": src.offset, "src_index": src.index,
        "raw_size": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest(),
    }


def deadletter_message(record: dict[str, Any], limit: int = DEADLETTER_TOPIC_RAW) -> dict[str, Any]:
    """The dead letter for the qg.deadletter topic: the original cut to `limit` characters when it
    is longer, with its size and hash so it can be matched with the table's full copy."""
    if len(record["raw"]) <= limit:
        return {**record, "truncated": False}
    return {**record, "raw": record["raw"][:limit], "truncated": True}


def detector_deadletter(record: dict[str, Any], src: Source) -> dict[str, Any]:
    """A dead letter a detector decided (a verdict whose finding never came): named by the input it
    stands for, so a re-run timer does not store it twice."""
    dl = deadletter_record(dumps(record["event"]).encode(), record["error"], src)
    return {**dl, "dl_id": record["dl_id"]}


def deadletter_row(record: dict[str, Any]) -> Row:
    return tuple(record[c] for c in DEADLETTER_COLUMNS)


def detector_row(table: str, record: dict[str, Any], src: Source) -> Row:
    """A row a detector hands over beside its findings (`notices`, `responses`, `memberships`,
    `finding_status`)."""
    if table == "notices":
        key = f"{record['group_id']}/{record['notice_id']}"
    elif table == "finding_status":
        key = f"{record['finding_id']}/{record['seq']}"  # the finding's n-th verdict
    elif table == "memberships":
        # A version of one person's standing in one group; seq orders the versions.
        key = f"{record['org_id']}/{record['group_id']}/{record['user_id']}/{record['seq']}"
    else:
        key = f"{record['group_id']}/{record['notice_id']}/{record['user_id']}"
    columns = TABLES[table]
    return (key,) + tuple(int(record[c]) if c in _FLAGS else record[c] for c in columns[1:-4]) + _src(src)
