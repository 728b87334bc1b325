"""Decode one Kafka record (or file line) into valid events and dead letters.

A record is one JSON event or a batch envelope (a JSON array of events). Each element is validated
on its own: a bad one becomes a dead letter with the reason, the rest of the envelope goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.records import INTERNAL_KINDS, SchemaError, validate_event
from schemas.rows import Source, deadletter_record


@dataclass
class Decoded:
    events: list[tuple[dict[str, Any], Source]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)


BRIDGE_ERROR = "bridge_error"  # a record a bridge sends for a payload it cannot map


def decode_record(raw: bytes | None, src: Source, max_text_chars: int, out: Decoded | None = None,
                  internal: bool = False) -> Decoded:
    """`internal`: the record was forwarded by qunguard itself (only such records may hold the
    internal kinds, INTERNAL_KINDS); anything a producer sends is validated as input."""
    out = out if out is not None else Decoded()
    if not raw:
        out.dead.append(deadletter_record(raw or b"", "empty record", src))
        return out
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        out.dead.append(deadletter_record(raw, f"invalid JSON: {exc}", src))
        return out
    if isinstance(obj, list):
        if not obj:
            out.dead.append(deadletter_record(raw, "empty batch envelope", src))
        for i, element in enumerate(obj):
            _validate(element, Source(src.topic, src.partition, src.offset, i), max_text_chars, out, None, internal)
    else:
        _validate(obj, src, max_text_chars, out, raw, internal)
    return out


def _validate(obj: Any, src: Source, max_text_chars: int, out: Decoded, raw: bytes | None, internal: bool) -> None:
    if isinstance(obj, dict) and obj.get("kind") == BRIDGE_ERROR:
        # a bridge's payload it could not map (pipeline/adapters/): its dead letter, with the bridge's reason
        payload = obj.get("payload")
        body = payload.encode() if isinstance(payload, str) else _element_bytes(payload)
        out.dead.append(deadletter_record(body, str(obj.get("error") or "unmappable"), src))
        return
    try:
        event = validate_event(obj, max_text_chars)
        if event["kind"] in INTERNAL_KINDS and not internal:
            raise SchemaError(f"kind: {event['kind']!r} is qunguard's own (forwarded between its stages); "
                              "producers cannot send it")
        out.events.append((event, src))
    except SchemaError as exc:
        out.dead.append(deadletter_record(raw if raw is not None else _element_bytes(obj), str(exc), src))


def _element_bytes(obj: Any) -> bytes:
    """The bytes of one bad element of an envelope, for its dead letter (even when too deep to dump)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return repr(obj)[:1_000_000].encode("utf-8", "backslashreplace")
