"""The simulator's traffic as a OneBot v11 implementation (NapCat, go-cqhttp) would send it, for the
demo and the bridge's benchmark: group messages as OneBot events (alternately array and CQ-code
string form, as the two implementations' defaults differ), membership changes as notices.

QQ numbers are numbers: every simulated group and person gets one (stable within a run), and the
events OneBot has no form for (the HR roster, group registration, reviewers' feedback) are
returned as qunguard events with the same numbers, to be produced directly as their own feeds
would be. OneBot's `time` is in seconds, so event times lose their milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

SELF_ID = 3_889_000_001  # the bot account in every simulated group

SEGMENT = {"image": "image", "file": "file", "voice": "record", "video": "video", "sticker": "face"}


class Numbers:
    def __init__(self, start: int) -> None:
        self.next = start
        self.of: dict[str, int] = {}

    def __call__(self, name: str | None) -> int | None:
        if name is None:
            return None
        if name not in self.of:
            self.of[name] = self.next
            self.next += 1
        return self.of[name]


def _cq(text: str) -> str:
    return text.replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;")


def to_onebot(events: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("frame", a OneBot event) or ("direct", a qunguard event), in the order of `events`."""
    groups, users, messages = Numbers(700_000_001), Numbers(1_000_001), Numbers(1)
    for n, ev in enumerate(events):
        kind = ev["kind"]
        t = ev["ts"] // 1000
        if kind == "message":
            segments: list[dict[str, Any]] = []
            if ev.get("reply_to"):
                segments.append({"type": "reply", "data": {"id": str(messages(ev["reply_to"]))}})
            for m in ev.get("mentions") or ():
                segments.append({"type": "at", "data": {"qq": "all" if m == "@all" else str(users(m))}})
            kind_seg = SEGMENT.get(ev.get("msg_type", "text"))
            if ev.get("msg_type") == "red_packet":
                segments.append({"type": "redbag", "data": {"title": ev.get("text") or "恭喜发财"}})
            elif ev.get("msg_type") == "link":  # QQ's share card: the link with what it says
                urls = ev.get("urls") or [""]
                segments.append({"type": "share", "data": {"url": urls[0], "title": ev.get("text") or ""}})
            elif kind_seg is not None:
                data = {"name": ev.get("file_name") or "file", "file": "f"} if kind_seg == "file" else \
                    {"id": "14"} if kind_seg == "face" else {"file": "x"}  # a sticker is the face alone
                segments.append({"type": kind_seg, "data": data})
            if ev.get("text") and ev.get("msg_type") not in ("red_packet", "link", "sticker"):
                segments.append({"type": "text", "data": {"text": ev["text"]}})
            frame: dict[str, Any] = {
                "time": t, "self_id": SELF_ID, "post_type": "message", "message_type": "group", "sub_type": "normal",
                "message_id": messages(ev["msg_id"]), "group_id": groups(ev["group_id"]),
                "user_id": users(ev["sender_id"]), "font": 0,
                "sender": {"user_id": users(ev["sender_id"]), "nickname": ev.get("sender_name") or "",
                           "card": ev.get("sender_name") or "", "role": ev.get("sender_role") or "member"}}
            if n % 2:
                frame["message"] = "".join(
                    _cq(s["data"]["text"]) if s["type"] == "text" else
                    f"[CQ:{s['type']}," + ",".join(f"{k}={_cq(str(v))}" for k, v in s["data"].items()) + "]"
                    for s in segments)
            else:
                frame["message"] = segments
            yield "frame", frame
        elif kind == "member":
            base = {"time": t, "self_id": SELF_ID, "post_type": "notice", "group_id": groups(ev["group_id"]),
                    "user_id": users(ev["user_id"])}
            actor = users(ev.get("actor_id")) or 0
            action = ev["action"]
            if action == "join":
                yield "frame", {**base, "notice_type": "group_increase", "operator_id": actor,
                                "sub_type": "invite" if ev.get("actor_id") else "approve"}
                if ev.get("nickname"):
                    yield "frame", {**base, "notice_type": "group_card", "card_new": ev["nickname"], "card_old": ""}
            elif action in ("leave", "kick"):
                yield "frame", {**base, "notice_type": "group_decrease", "sub_type": action,
                                "operator_id": actor if action == "kick" else base["user_id"]}
            elif action == "nickname":
                yield "frame", {**base, "notice_type": "group_card", "card_new": ev.get("nickname") or "",
                                "card_old": ""}
            elif action == "role":
                yield "frame", {**base, "notice_type": "group_admin",
                                "sub_type": "set" if ev.get("role") in ("admin", "owner") else "unset"}
        else:
            out = dict(ev)
            for key, numbers in (("group_id", groups), ("user_id", users), ("owner_id", users),
                                 ("actor_id", users)):
                if out.get(key):
                    out[key] = str(numbers(out[key]))
            yield "direct", out


async def until_stored(http: Any, base: str, sent: int, interval: float = 0.1) -> None:
    """Wait until the bridge at `base` has read `sent` frames and Kafka has acknowledged all their
    events (its /healthz: `received`, `unacknowledged`); `http` is an aiohttp ClientSession."""
    while True:
        async with http.get(f"{base}/healthz") as r:
            counts = await r.json()
        if counts["received"] >= sent and not counts["unacknowledged"]:
            return
        await asyncio.sleep(interval)
