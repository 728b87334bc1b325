"""OneBot v11 (QQ through NapCat, Lagrange, LLOneBot, go-cqhttp) → qunguard events (SPEC §2, §10).

Pure: a decoded OneBot payload in, events out, or `Unmappable` with the reason. The bridge
(pipeline/adapters/bridge.py) does the HTTP, the WebSocket and Kafka. Sources of every shape
handled here are in ../shared/payloads/README.md §1 (the spec, go-cqhttp's converter, NapCat's).

Decisions where OneBot and qunguard differ:
- `event_id` is `qq:<self_id>:<message_id>` for messages: a message id is only unique per bot
  account. Notices, which have no id, hash their whole payload (the same notice delivered twice,
  by HTTP retry or a reconnect, is the same event).
- `msg_id` is the OneBot `message_id` as a string: what `delete_msg` takes back.
- The text is the text segments joined; `at` segments become `mentions` (`qq=all` → `@all`);
  cards (`json`, `xml`, `share`) contribute their title, description and prompt to the text and
  their links to `urls`, so the content rules read what members see.
- A message whose `message` is empty (NapCat sends red packets so: it has no converter for its
  wallet element) is kept as a `system` message, which no rule judges; a `redbag` segment
  (go-cqhttp) is a `red_packet` with its title as text.
- `group_upload` is a `file` message (its name is judged). `group_ban` and `notify` have no
  qunguard kind: they are stored as `system` messages (exempt from every rule) with the notice in
  `extra`, so nothing the platform reported is lost.
- Private messages, friend and group requests are not group traffic: `Unmappable`. Heartbeats and
  lifecycle events are the protocol's keepalives: `map_payload` returns no events and no error.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

SEGMENT_TYPES = {  # the msg_type a segment gives a message that has no text
    "image": "image", "record": "voice", "video": "video", "file": "file", "face": "sticker",
    "mface": "sticker", "marketface": "sticker", "dice": "sticker", "rps": "sticker", "poke": "sticker",
    "redbag": "red_packet", "json": "card", "xml": "card", "share": "link", "music": "link",
    "contact": "card", "location": "card", "forward": "card", "node": "card", "markdown": "text",
}
STRONG = ("redbag", "json", "xml", "share", "file", "forward", "record", "video", "contact", "location", "music")
URL = re.compile(r"https?://[^\s\"'<>\\]+")


class Unmappable(ValueError):
    """A payload with no qunguard event; the message is the dead letter's reason."""


def parse_cq(text: str) -> list[dict[str, Any]]:
    """The CQ-code string form (OneBot v11 string.md) as array segments."""
    out: list[dict[str, Any]] = []
    pos = 0
    for m in re.finditer(r"\[CQ:([^,\]]+)((?:,[^\]]*)?)\]", text):
        if m.start() > pos:
            out.append({"type": "text", "data": {"text": _unescape(text[pos:m.start()])}})
        data = {}
        for part in m.group(2)[1:].split(",") if m.group(2) else []:
            key, _, value = part.partition("=")
            data[key] = _unescape(value)
        out.append({"type": m.group(1), "data": data})
        pos = m.end()
    if pos < len(text):
        out.append({"type": "text", "data": {"text": _unescape(text[pos:])}})
    return out


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _unescape(s: str) -> str:
    return s.replace("&#44;", ",").replace("&#91;", "[").replace("&#93;", "]").replace("&amp;", "&")


def map_payload(payload: Any, org_id: str) -> list[dict[str, Any]]:
    """One OneBot event → qunguard events (none for keepalives). Raises Unmappable."""
    if not isinstance(payload, dict):
        raise Unmappable(f"onebot: a payload is a JSON object, got {type(payload).__name__}")
    post = payload.get("post_type")
    if post == "meta_event":
        return []
    if post in ("message", "message_sent"):
        if payload.get("message_type") != "group":
            raise Unmappable(f"onebot: {payload.get('message_type')!r} message: only group messages are mapped")
        return [_message(payload, org_id)]
    if post == "notice":
        return _notice(payload, org_id)
    if post == "request":
        raise Unmappable(f"onebot: {payload.get('request_type')!r} request: requests are not mapped "
                         "(a join shows as group_increase once approved)")
    raise Unmappable(f"onebot: post_type {post!r} is not a OneBot v11 event")


def _need(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None or value == "":
        raise Unmappable(f"onebot: {payload.get('post_type')} without {key}")
    return str(value)


def _ts(payload: dict[str, Any]) -> int:
    t = payload.get("time")
    if not isinstance(t, int | float) or isinstance(t, bool):
        raise Unmappable("onebot: time: expected epoch seconds")
    return int(t * 1000) if t < 10_000_000_000 else int(t)  # seconds (the spec); ms from some forks


def _message(p: dict[str, Any], org_id: str) -> dict[str, Any]:
    group, mid, self_id = _need(p, "group_id"), _need(p, "message_id"), str(p.get("self_id", ""))
    raw = p.get("message")
    if raw is None:
        raw = p.get("raw_message", "")
    segments = parse_cq(raw) if isinstance(raw, str) else raw
    if not isinstance(segments, list) or not all(isinstance(s, dict) and "type" in s for s in segments):
        raise Unmappable("onebot: message: neither a CQ-code string nor an array of segments")
    sender = _dict(p.get("sender"))
    anonymous = _dict(p.get("anonymous")) or None
    user = f"anonymous:{anonymous.get('id') or anonymous.get('name')}" if anonymous else _need(p, "user_id")
    texts: list[str] = []
    mentions: list[str] = []
    urls: list[str] = []
    reply_to = file_name = None
    kinds: list[str] = []
    for seg in segments:
        kind, data = str(seg["type"]), _dict(seg.get("data"))
        if kind == "text":
            texts.append(str(data.get("text", "")))
        elif kind == "at":
            qq = str(data.get("qq", ""))
            mentions.append("@all" if qq in ("all", "0") else qq)
        elif kind == "reply":
            reply_to = str(data.get("id")) if data.get("id") is not None else None
        else:
            kinds.append(kind)
            if kind == "file":
                file_name = str(data.get("name") or data.get("file") or "") or None
            words, links = _card_text(kind, data)
            texts.extend(words)
            urls.extend(links)
    text = "".join(texts).strip() if not kinds else " ".join(t.strip() for t in texts if t.strip())
    strong = next((k for k in kinds if k in STRONG), None)
    if not segments:
        msg_type = "system"  # NapCat's red packet, or an element no converter knows: nothing to judge
    elif strong == "json":
        msg_type = "mini_program" if _is_miniapp(segments) else "card"
    elif strong is not None:
        msg_type = SEGMENT_TYPES[strong]
    elif any(t.strip() for t in texts if t) and all(k in ("face", "mface", "image") for k in kinds):
        msg_type = "text"
    elif kinds:
        msg_type = SEGMENT_TYPES.get(kinds[0], "text")
    else:
        msg_type = "text"
    role = sender.get("role") if sender.get("role") in ("owner", "admin", "member") else "member"
    event: dict[str, Any] = {
        "kind": "message", "event_id": f"qq:{self_id}:{mid}", "org_id": org_id, "ts": _ts(p), "platform": "qq",
        "group_id": group, "msg_id": mid, "sender_id": user,
        "sender_name": str(sender.get("card") or sender.get("nickname") or (anonymous or {}).get("name") or ""),
        "sender_role": role, "msg_type": msg_type, "text": text, "reply_to": reply_to,
        "mentions": list(dict.fromkeys(mentions)), "urls": list(dict.fromkeys(urls)), "file_name": file_name,
        "self_id": self_id, "segments": [str(s["type"]) for s in segments]}
    if p.get("sub_type") not in (None, "normal"):
        event["sub_type"] = p["sub_type"]
    return event


def _is_miniapp(segments: list[dict[str, Any]]) -> bool:
    for seg in segments:
        if seg["type"] == "json":
            card = _json(_dict(seg.get("data")).get("data"))
            app = str(card.get("app", "")) if isinstance(card, dict) else ""
            if "miniapp" in app or (isinstance(card, dict) and "detail_1" in (card.get("meta") or {})):
                return True
    return False


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return value
    try:
        return orjson.loads(value) if isinstance(value, str | bytes) else None
    except orjson.JSONDecodeError:
        return None


def _card_text(kind: str, data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What a member reads on a card, and its links."""
    if kind == "redbag":
        return [str(data.get("title", ""))], []
    if kind in ("share", "music"):
        return [str(data.get(k, "")) for k in ("title", "content") if data.get(k)], \
            [str(data[k]) for k in ("url", "jumpUrl") if data.get(k)]
    if kind in ("location",):
        return [str(data.get(k, "")) for k in ("title", "content") if data.get(k)], []
    if kind == "json":
        card = _json(data.get("data"))
        if not isinstance(card, dict):
            return [], URL.findall(str(data.get("data", "")))
        words = [str(card[k]) for k in ("prompt",) if card.get(k)]
        links: list[str] = []
        for view in (card.get("meta") or {}).values() if isinstance(card.get("meta"), dict) else []:
            if isinstance(view, dict):
                words += [str(view[k]) for k in ("title", "desc") if view.get(k)]
                links += [str(view[k]) for k in ("qqdocurl", "url", "jumpUrl") if isinstance(view.get(k), str)
                          and view[k].startswith("http")]
        return list(dict.fromkeys(words)), list(dict.fromkeys(links))
    if kind == "xml":
        xml = str(data.get("data", ""))
        words = re.findall(r"(?:brief|title|summary)=\"([^\"]*)\"", xml) + re.findall(r">([^<>]+)<", xml)
        return [w.strip() for w in words if w.strip()], URL.findall(xml)
    return [], []


def _digest(p: dict[str, Any]) -> str:
    return hashlib.blake2b(orjson.dumps(p, option=orjson.OPT_SORT_KEYS), digest_size=10).hexdigest()


def _notice(p: dict[str, Any], org_id: str) -> list[dict[str, Any]]:
    notice = p.get("notice_type")
    if notice not in ("group_increase", "group_decrease", "group_card", "group_admin", "group_recall",
                      "group_ban", "notify", "group_upload"):
        raise Unmappable(f"onebot: notice {notice!r} is not mapped (not a group notice)")
    group = _need(p, "group_id")
    base = {"event_id": f"qq:{p.get('self_id', '')}:n:{_digest(p)}", "org_id": org_id, "ts": _ts(p),
            "group_id": group, "self_id": str(p.get("self_id", ""))}
    user = str(p.get("user_id", "")) or None
    operator = str(p.get("operator_id") or "") or None
    if operator == "0":
        operator = None
    sub = p.get("sub_type")
    if notice == "group_increase":
        return [{**base, "kind": "member", "user_id": _need(p, "user_id"), "action": "join",
                 "actor_id": operator if operator != user else None, "sub_type": sub}]
    if notice == "group_decrease":
        if sub == "kick_me":  # the bot itself was removed: the group is out of sight from here on
            return [{**base, "kind": "member", "user_id": _need(p, "self_id"), "action": "kick", "actor_id": operator,
                     "sub_type": sub}]
        action = "kick" if sub == "kick" else "leave"
        return [{**base, "kind": "member", "user_id": _need(p, "user_id"), "action": action,
                 "actor_id": operator if action == "kick" else user, "sub_type": sub}]
    if notice == "group_card":
        return [{**base, "kind": "member", "user_id": _need(p, "user_id"), "action": "nickname",
                 "nickname": str(p.get("card_new") or ""), "card_old": p.get("card_old")}]
    if notice == "group_admin":
        return [{**base, "kind": "member", "user_id": _need(p, "user_id"), "action": "role",
                 "role": "admin" if sub == "set" else "member", "sub_type": sub}]
    if notice == "group_recall":
        mid = _need(p, "message_id")
        return [{**base, "kind": "message", "platform": "qq", "msg_id": f"{mid}:recall", "msg_type": "recall",
                 "sender_id": _need(p, "user_id"), "reply_to": mid, "operator_id": operator, "text": ""}]
    if notice == "group_upload":  # a file put in the group: its name is judged like a file message's
        file = _dict(p.get("file"))
        return [{**base, "kind": "message", "platform": "qq", "msg_id": f"file:{file.get('id') or _digest(p)}",
                 "msg_type": "file", "sender_id": _need(p, "user_id"), "text": "",
                 "file_name": str(file.get("name") or "") or None}]
    # group_ban, notify (lucky king, poke, honour): the platform's notices, kept as such
    sender = operator or user or str(p.get("self_id", "")) or "system"
    extra = {k: v for k, v in p.items() if k not in ("time", "self_id", "post_type", "group_id")}
    return [{**base, "kind": "message", "platform": "qq", "msg_id": f"n:{_digest(p)}", "msg_type": "system",
             "sender_id": sender, "text": "", "notice": extra}]
