"""WeCom chat archive (会话内容存档) → qunguard events (SPEC §2, §10).

Pure: one decrypted archive record (the JSON `DecryptData` returns, with the `seq` GetChatData gave
its chatdata item), or one `groupchat/get` answer with the `roomid` it was asked for, in; events
out, or `Unmappable` with the reason. Shapes and sources: ../shared/payloads/README.md §2.

Decisions:
- `roomid` is the group; a record with an empty `roomid` is a one-to-one chat: `Unmappable`
  (qunguard judges groups). So are `switch` (a user switching corp, no chat) and a `msgtime` of 0.
- `event_id` is `wecom:<msgid>` (msgid is the archive's dedupe key); `msg_id` the msgid.
- Each `msgtype` gives the text a member reads (a card's title and description, a chat record's
  texts, a vote's title and options) and its links, so the content rules see them; the body key
  differs from the msgtype for docmsg (`doc`), markdown and news (`info`), external_redpacket
  (`redpacket`) and vote (top level).
- A group's member list becomes a `group` event (name, creator) at its creation time and one
  `member` join per member at their join time; ids are derived from the room, member and join
  time, so pulling the same list again gives the same events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from pipeline.adapters.onebot import URL, Unmappable

Body = dict[str, Any]


def _s(v: Any) -> str:
    return "" if v is None else str(v)


def _words(body: Body, *keys: str) -> list[str]:
    return [_s(body[k]) for k in keys if body.get(k)]


def _items(items: Any) -> tuple[list[str], list[str]]:
    """chatrecord and mixed items: `content` is a JSON string per item."""
    words: list[str] = []
    kinds: list[str] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        kind = _s(item.get("type")).removeprefix("ChatRecord").lower()
        kinds.append(kind)
        try:
            content = orjson.loads(item.get("content") or "{}")
        except orjson.JSONDecodeError:
            content = {"content": item.get("content")}
        if isinstance(content, dict):
            words += _words(content, "content", "title", "description", "filename", "address")
    return words, kinds


def _text(b: Body) -> tuple[str, list[str], str]:
    return "text", _words(b, "content"), ""


def _simple(msg_type: str, *keys: str) -> Callable[[Body], tuple[str, list[str], str]]:
    return lambda b: (msg_type, _words(b, *keys), "")


def _chatrecord(b: Body) -> tuple[str, list[str], str]:
    words, _ = _items(b.get("item"))
    return "card", _words(b, "title") + words, ""


def _mixed(b: Body) -> tuple[str, list[str], str]:
    words, kinds = _items(b.get("item"))
    return ("text" if "text" in kinds else (kinds[0] if kinds and kinds[0] in ("image", "file") else "card")), \
        words, ""


def _news(b: Body) -> tuple[str, list[str], str]:
    words: list[str] = []
    for item in b.get("item") or []:
        if isinstance(item, dict):
            words += _words(item, "title", "description", "url")
    return "link", words, ""


def _collect(b: Body) -> tuple[str, list[str], str]:
    questions = [_s(d.get("ques")) for d in b.get("details") or [] if isinstance(d, dict)]
    return "card", _words(b, "title") + questions, ""


def _file(b: Body) -> tuple[str, list[str], str]:
    return "file", [], _s(b.get("filename"))


# msgtype → (body key, how to read it). The body key is the msgtype's own unless the archive says otherwise.
READERS: dict[str, tuple[str | None, Callable[[Body], tuple[str, list[str], str]]]] = {
    "text": ("text", _text),
    "markdown": ("info", _text),
    "image": ("image", _simple("image")),
    "emotion": ("emotion", _simple("sticker")),
    "voice": ("voice", _simple("voice")),
    "video": ("video", _simple("video")),
    "file": ("file", _file),
    "revoke": ("revoke", _simple("recall")),
    "agree": ("agree", _simple("system")),
    "disagree": ("disagree", _simple("system")),
    "card": ("card", _simple("card", "corpname")),
    "location": ("location", _simple("card", "title", "address")),
    "link": ("link", _simple("link", "title", "description", "link_url")),
    "weapp": ("weapp", _simple("mini_program", "title", "description", "displayname")),
    "chatrecord": ("chatrecord", _chatrecord),
    "mixed": ("mixed", _mixed),
    "todo": ("todo", _simple("card", "title", "content")),
    "vote": (None, lambda b: ("card", _words(b, "votetitle") + [_s(x) for x in b.get("voteitem") or []], "")),
    "collect": ("collect", _collect),
    "redpacket": ("redpacket", _simple("red_packet", "wish")),
    "external_redpacket": ("redpacket", _simple("red_packet", "wish")),
    "meeting": ("meeting", _simple("card", "topic", "address", "remarks")),
    "calendar": ("calendar", _simple("card", "title", "place", "remarks")),
    "docmsg": ("doc", _simple("link", "title", "link_url")),
    "news": ("info", _news),
    "sphfeed": ("sphfeed", _simple("link", "sph_name", "feed_desc")),
    "meeting_voice_call": ("meeting_voice_call", _simple("system")),
    "voip_doc_share": ("voip_doc_share", _file),
}


def map_record(record: Any, org_id: str) -> list[dict[str, Any]]:
    """One decrypted archive record, or one group member list, → events. Raises Unmappable."""
    if not isinstance(record, dict):
        raise Unmappable(f"wecom: a record is a JSON object, got {type(record).__name__}")
    if "members" in record and "msgid" not in record:
        return map_members(record, org_id)
    msgid = _s(record.get("msgid"))
    if not msgid:
        raise Unmappable("wecom: record without msgid")
    if record.get("action") == "switch":
        raise Unmappable("wecom: action 'switch' (a user switching corp) is not chat traffic")
    room = _s(record.get("roomid"))
    if not room:
        raise Unmappable("wecom: empty roomid: a one-to-one chat, only group chats are mapped")
    msg_type_in = _s(record.get("msgtype"))
    reader = READERS.get(msg_type_in)
    if reader is None:
        raise Unmappable(f"wecom: msgtype {msg_type_in!r} is not mapped")
    ts = record.get("msgtime")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0:
        raise Unmappable(f"wecom: msgtime {ts!r}: expected epoch milliseconds")
    sender = _s(record.get("from"))
    if not sender:
        raise Unmappable("wecom: record without from")
    key, read = reader
    body = record if key is None else record.get(key)
    if not isinstance(body, dict):
        raise Unmappable(f"wecom: msgtype {msg_type_in!r} without its {key!r} body")
    msg_type, words, file_name = read(body)
    reply_to = None
    if record.get("action") == "recall" or msg_type_in == "revoke":
        msg_type, reply_to = "recall", _s(body.get("pre_msgid")) or None
    text = "\n".join(w.strip() for w in words if w and w.strip())
    event: dict[str, Any] = {
        "kind": "message", "event_id": f"wecom:{msgid}", "org_id": org_id, "ts": ts, "platform": "wecom",
        "group_id": room, "msg_id": msgid, "sender_id": sender, "msg_type": msg_type, "text": text,
        "reply_to": reply_to, "urls": list(dict.fromkeys(URL.findall(text))), "file_name": file_name or None,
        "archive_msgtype": msg_type_in}
    if msgid.endswith(("_external", "_updown_stream")):  # the archive marks other corps' messages so
        event["archive_origin"] = msgid.rsplit("_", 1)[-1] if msgid.endswith("_external") else "updown_stream"
    if "seq" in record:
        event["archive_seq"] = record["seq"]
    return [event]


def map_members(answer: dict[str, Any], org_id: str) -> list[dict[str, Any]]:
    """A `groupchat/get` answer with its `roomid`: the group and a join per member."""
    if answer.get("errcode") not in (None, 0):
        raise Unmappable(f"wecom: groupchat/get answered errcode {answer.get('errcode')}: {answer.get('errmsg')}")
    room = _s(answer.get("roomid"))
    if not room:
        raise Unmappable("wecom: a member list needs the roomid it was asked for ('roomid' beside the answer)")
    members = answer.get("members")
    if not isinstance(members, list):
        raise Unmappable("wecom: members: expected a list")
    created = answer.get("room_create_time")
    out: list[dict[str, Any]] = []
    if isinstance(created, int) and created > 0:
        out.append({"kind": "group", "event_id": f"wecom:{room}:create", "org_id": org_id, "ts": created * 1000,
                    "group_id": room, "action": "create", "name": _s(answer.get("roomname")) or None,
                    "owner_id": _s(answer.get("creator")) or None, "purpose": _s(answer.get("notice")) or None})
    for m in members:
        if not isinstance(m, dict) or not m.get("memberid") or not isinstance(m.get("jointime"), int):
            raise Unmappable(f"wecom: member {m!r}: expected memberid and jointime")
        out.append({"kind": "member", "event_id": f"wecom:{room}:join:{m['memberid']}:{m['jointime']}",
                    "org_id": org_id, "ts": m["jointime"] * 1000, "group_id": room, "user_id": _s(m["memberid"]),
                    "action": "join", "actor_id": None})
    return out
