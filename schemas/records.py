"""Event and finding records: the one definition used by Kafka, JSON Lines files and ClickHouse.

Each event kind is a tuple of `Field`s. `validate_event` turns a decoded JSON object into a clean
dict (defaults filled, unknown fields collected under `extra`) or raises `SchemaError` with a
message that names the field. ClickHouse row builders in `schemas.rows` read the same fields.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, cast

import orjson

PLATFORMS = ("wechat", "wecom", "qq", "dingtalk", "feishu")
ROLES = ("owner", "admin", "member")
MSG_TYPES = (
    "text", "image", "link", "file", "red_packet", "mini_program", "card",
    "voice", "video", "sticker", "recall", "system",
)
MEMBER_ACTIONS = ("join", "leave", "kick", "nickname", "role")
GROUP_ACTIONS = ("create", "update", "dissolve")
ROSTER_STATUS = ("active", "left")
MEMBERSHIP_ACTIONS = ("join", "leave", "nickname", "seen")
VERDICTS = ("false_positive", "confirmed", "appeal")
STATUSES = ("open", "confirmed", "false_positive", "appealed")  # a finding's review status (SPEC §9)
# Kinds qunguard forwards between its own stages; a producer's record of such a kind is a dead letter.
INTERNAL_KINDS = frozenset({"membership", "alertable", "strike", "verdict"})
SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

# Timestamps outside this range are typos (seconds instead of ms, or garbage), not events.
TS_MIN = 946_684_800_000  # 2000-01-01
TS_MAX = 4_102_444_800_000  # 2100-01-01


class SchemaError(ValueError):
    """An event that does not match its schema; the message names the field."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # "str", "int", "bool", "strs" (list of str), "ts"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    nonempty: bool = False


COMMON = (
    Field("kind", "str", required=True),
    Field("event_id", "str", required=True, nonempty=True),
    Field("org_id", "str", required=True, nonempty=True),
    Field("ts", "ts", required=True),
)

KINDS: dict[str, tuple[Field, ...]] = {
    "message": (
        Field("platform", "str", required=True, choices=PLATFORMS),
        Field("group_id", "str", required=True, nonempty=True),
        Field("msg_id", "str", required=True, nonempty=True),
        Field("sender_id", "str", required=True, nonempty=True),
        Field("sender_name", "str", default=""),
        Field("sender_role", "str", default="member", choices=ROLES),
        Field("msg_type", "str", default="text", choices=MSG_TYPES),
        Field("text", "str", default=""),
        Field("reply_to", "str", default=None),
        Field("mentions", "strs", default=()),
        Field("urls", "strs", default=()),
        Field("file_name", "str", default=None),
    ),
    "member": (
        Field("group_id", "str", required=True, nonempty=True),
        Field("user_id", "str", required=True, nonempty=True),
        Field("action", "str", required=True, choices=MEMBER_ACTIONS),
        Field("actor_id", "str", default=None),
        Field("nickname", "str", default=None),
        Field("role", "str", default=None, choices=ROLES),
    ),
    "group": (
        Field("group_id", "str", required=True, nonempty=True),
        Field("action", "str", required=True, choices=GROUP_ACTIONS),
        Field("name", "str", default=None),
        Field("owner_id", "str", default=None),
        Field("registered", "bool", default=None),
        Field("temporary", "bool", default=None),
        Field("ends_at", "ts", default=None),
        Field("purpose", "str", default=None),
    ),
    "roster": (
        Field("user_id", "str", required=True, nonempty=True),
        Field("name", "str", required=True),
        Field("department", "str", default=""),
        Field("status", "str", default="active", choices=ROSTER_STATUS),
    ),
    # qunguard's own: a membership fact forwarded from the group's partition to the user's
    # (pipeline/detectors/governance/). Producers do not send it.
    "membership": (
        Field("group_id", "str", required=True, nonempty=True),
        Field("user_id", "str", required=True, nonempty=True),
        Field("action", "str", required=True, choices=MEMBERSHIP_ACTIONS),
        Field("nickname", "str", default=None),
        Field("actor_id", "str", default=None),
        Field("approved", "bool", default=False),
        Field("source", "str", default=""),
    ),
    # qunguard's own: a finding forwarded to its group's alert stage (pipeline/alerting/stage.py).
    "alertable": (
        Field("group_id", "str", required=True, nonempty=True),
        Field("channels", "strs", default=()),
        Field("finding", "str", required=True),  # the finding's summary as JSON
    ),
    "feedback": (
        Field("finding_id", "str", required=True, nonempty=True),
        Field("verdict", "str", required=True, choices=VERDICTS),
        Field("actor_id", "str", default=None),
        Field("note", "str", default=""),
    ),
    # qunguard's own: a verdict forwarded to the ladder of the finding's member (pipeline/review/).
    "verdict": (
        Field("finding_id", "str", required=True, nonempty=True),
        Field("verdict", "str", required=True, choices=VERDICTS),
        Field("actor_id", "str", default=None),
        Field("note", "str", default=""),
        Field("feedback_id", "str", required=True),  # the feedback event's event_id
    ),
    # qunguard's own: a finding forwarded to its member's ladder (pipeline/review/).
    "strike": (
        Field("group_id", "str", required=True, nonempty=True),
        # empty for a finding about the group itself (group.idle): its status lives in the ladder
        # too, and it is nobody's strike (ladder.py issues no sanction for it)
        Field("user_id", "str", required=True),
        Field("finding", "str", required=True),  # the finding's summary as JSON
    ),
}

_KNOWN = {kind: {f.name for f in COMMON + fields} for kind, fields in KINDS.items()}


def _check(field: Field, value: Any, where: str) -> Any:
    t = field.type
    if t == "str":
        if not isinstance(value, str):
            raise SchemaError(f"{where}: expected a string, got {type(value).__name__}")
        if field.nonempty and not value:
            raise SchemaError(f"{where}: must not be empty")
        if field.choices and value not in field.choices:
            raise SchemaError(f"{where}: {value[:40]!r} is not one of {', '.join(field.choices)}")
        return value
    if t == "ts":
        # bool is an int subclass in Python; True is not a timestamp.
        if isinstance(value, float) and value.is_integer() and not TS_MIN <= value <= TS_MAX:
            # orjson reads integers past 64 bits as floats: it is a number, just far out of range.
            raise SchemaError(f"{where}: {value:.0f} is not epoch milliseconds between 2000 and 2100")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SchemaError(f"{where}: expected epoch milliseconds (integer), got {type(value).__name__}")
        if not TS_MIN <= value <= TS_MAX:
            raise SchemaError(f"{where}: {value} is not epoch milliseconds between 2000 and 2100")
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise SchemaError(f"{where}: expected true or false, got {type(value).__name__}")
        return value
    if t == "strs":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SchemaError(f"{where}: expected a list of strings")
        return tuple(value)
    raise AssertionError(f"unknown field type {t}")  # a bug in this file, not bad input


# Per kind, the fields as (field, name, is_plain_str, choices) for the validation loop: the common
# case, a string field holding a string, is checked inline; everything else goes through _check.
_SPEC = {
    kind: tuple((f, f.name, f.type == "str", frozenset(f.choices) if f.choices else None)
                for f in COMMON + fields)
    for kind, fields in KINDS.items()
}


def validate_event(obj: Any, max_text_chars: int = 100_000) -> dict[str, Any]:
    """Return the event with defaults filled and unknown fields under `extra`, or raise SchemaError."""
    if not isinstance(obj, dict):
        raise SchemaError(f"event: expected a JSON object, got {type(obj).__name__}")
    kind: Any = obj.get("kind")
    spec = _SPEC.get(kind) if isinstance(kind, str) else None
    if spec is None:
        if kind is None:
            raise SchemaError("kind: missing")
        public = ", ".join(k for k in KINDS if k not in INTERNAL_KINDS)
        raise SchemaError(f"kind: {str(kind)[:40]!r} is not one of {public}")
    out: dict[str, Any] = {}
    get = obj.get
    for field, name, plain, choices in spec:
        value = get(name)
        if value is None:
            if field.required:
                raise SchemaError(f"{kind}.{name}: missing")
            out[name] = field.default
        elif plain and type(value) is str and (value or not field.nonempty) and (choices is None or value in choices):
            out[name] = value
        else:
            out[name] = _check(field, value, f"{kind}.{name}")
    if kind == "feedback" and not FINDING_ID_RE.fullmatch(out["finding_id"]):
        raise SchemaError(f"feedback.finding_id: {out['finding_id'][:40]!r} is not a finding id "
                          f"({FINDING_ID_CHARS} hexadecimal digits, as in qg.findings)")
    if kind == "message" and len(out["text"]) > max_text_chars:
        raise SchemaError(f"message.text: {len(out['text'])} characters, over the limit of {max_text_chars}")
    known = _KNOWN[kind]
    extra = {k: v for k, v in obj.items() if k not in known}
    if extra:
        try:  # what cannot be written back as JSON cannot be stored (orjson writes 254 levels, reads 1,024)
            orjson.dumps(extra)
        except orjson.JSONEncodeError as exc:
            raise SchemaError(f"{kind}: unknown fields cannot be stored: {exc}") from None
    out["extra"] = extra
    return out


def event_key(event: dict[str, Any]) -> str:
    """Kafka key: the group for group-scoped kinds, the user for roster and membership facts (they
    meet on the user's partition), the member's ladder for strikes and verdicts, the org otherwise."""
    kind = event["kind"]
    if kind == "membership":
        return cast(str, event["user_id"])
    if kind == "verdict":
        return ladder_key(event["org_id"], event["finding_id"])
    if kind == "strike":
        return ladder_key(event["org_id"], finding_id("", event["group_id"], "", event["user_id"]))
    return cast(str, event.get("group_id") or event.get("user_id") or event["org_id"])


# --- findings (SPEC §3) ---------------------------------------------------------------------

FINDING_FIELDS = ("finding_id", "rule", "severity", "org_id", "group_id", "msg_id", "user_id", "ts", "evidence",
                  "policy_version")
FINDING_ID_CHARS = 24
FINDING_ID_RE = re.compile(f"[0-9a-f]{{{FINDING_ID_CHARS}}}")
MEMBER_PART = 12  # the finding id's first hex digits: its (group, member), where its ladder lives


def finding_id(rule: str, group_id: str, msg_id: str, user_id: str) -> str:
    """Deterministic, so a replay of the same input never creates a second finding. The first half
    hashes (group, member) only: a verdict that names nothing but the finding id still finds the
    member's ladder (pipeline/review/ladder.py) with no lookup."""
    member = "\x1f".join((group_id or "", user_id or "")).encode()
    raw = "\x1f".join((rule, group_id or "", msg_id or "", user_id or "")).encode()
    half = MEMBER_PART // 2
    return (hashlib.blake2b(member, digest_size=half).hexdigest()
            + hashlib.blake2b(raw, digest_size=FINDING_ID_CHARS // 2 - half).hexdigest())


def ladder_key(org_id: str, fid: str) -> str:
    """The state key (and Kafka key) of the ladder a finding's strike belongs to."""
    return f"{org_id}/{fid[:MEMBER_PART]}"


def make_finding(
    rule: str, severity: str, org_id: str, group_id: str, msg_id: str, user_id: str,
    ts: int, evidence: dict[str, Any],
) -> dict[str, Any]:
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity!r} is not one of {SEVERITIES}")
    return {
        "finding_id": finding_id(rule, group_id, msg_id, user_id),
        "rule": rule, "severity": severity, "org_id": org_id, "group_id": group_id,
        "msg_id": msg_id, "user_id": user_id, "ts": ts, "evidence": evidence, "policy_version": "",
    }
