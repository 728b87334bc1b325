"""Who is in a group, from `member` events (join, leave, kick, nickname, role) and from who posts.

`members` maps user_id → [nickname, role]. A sender never seen joining is a member all the same:
groups existed before qunguard was switched on. The deadline rules use it for "every current member
except the sender"; the membership rules (issue 6) will use the same state.
"""

from __future__ import annotations

from typing import Any


def apply_member_event(members: dict[str, list[str]], event: dict[str, Any]) -> None:
    uid, action = event["user_id"], event["action"]
    current = members.get(uid)
    if action in ("leave", "kick"):
        members.pop(uid, None)
    elif action == "join":
        members[uid] = [event["nickname"] or (current[0] if current else uid), event["role"] or "member"]
    elif action == "nickname":
        members[uid] = [event["nickname"] or uid, current[1] if current else "member"]
    elif action == "role":
        members[uid] = [current[0] if current else (event["nickname"] or uid), event["role"] or "member"]


def note_sender(members: dict[str, list[str]], event: dict[str, Any]) -> None:
    uid = event["sender_id"]
    current = members.get(uid)
    name = event["sender_name"] or (current[0] if current else uid)
    role = event["sender_role"] or "member"
    if current is None or current[0] != name or current[1] != role:
        members[uid] = [name, role]
