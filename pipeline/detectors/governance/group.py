"""The group stage of governance: `member.unauthorized_invite` and `group.*`, keyed by group.

State per group (plain JSON):

    {"org": org_id, "m": {user_id: [nickname, role]},        # who is in the group (membership.py)
     "name": str | None, "owner": user_id | None,
     "tmp": bool, "ends": ms | None, "ends_ev": event_id,    # a temporary group and its end
     "last": [ts, msg_id],                                   # the last message (or the creation)
     "flag": {rule: what was reported}}                      # one finding per episode

Rules, with what a finding's msg_id and user_id are:
- `member.unauthorized_invite`: a join whose actor is someone else who is neither owner nor admin
  (群成员不得擅自邀请其他人加入); the join event, the inviter. Roles come from member events, the
  group's owner_id and the senders' roles. An actor never seen is not an owner or admin.
- `member.impersonation`: a member who is not owner or admin, whose nickname copies an owner's
  or admin's of the same group (the same after normalisation, or theirs with up to 3 letters or
  digits added: 王总, 王总2; 王总助理 is another name), asks for money, an account or a code
  (the fraud cues' `request`: 转账, 垫付, 账户, 验证码 …): the boss scam from inside the
  group, where the nickname is the claim of identity. The message, its sender; evidence: both
  nicknames, the copied member, the request.
- `group.unregistered`: a group event that says registered: false (备案); once until it is registered.
  A group with no group event is not judged: qunguard does not know it.
- `group.name_format`: a name that does not match the policy's name_pattern; once per name.
- `group.expired`: a temporary group not dissolved `expire_working_days` working days after ends_at
  (须在该项工作结束后3个工作日之内予以注销): at the end of the last of those days, local time.
- `group.idle`: no message for `idle_days`; once per quiet spell, at its end.
Group findings name the owner as user_id, and the group event (or last message) as msg_id.

Every membership fact goes on as a `membership` event for the member stage (member.py): joins and
departures, a new nickname, and a sender seen for the first time (groups predate qunguard).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, cast

from pipeline.detectors import EXEMPT_TYPES, Context, Outcome
from pipeline.detectors.content.cues import cue
from pipeline.detectors.membership import apply_member_event, note_sender
from pipeline.policy import Membership, Policy
from pipeline.text.normalize import fold
from schemas.records import make_finding

DAY_MS = 86_400_000
PRIVILEGED = ("owner", "admin")


class GroupDetector:
    name = "group"
    kinds = frozenset({"message", "member", "group"})

    state_version = 1

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        return cast(str, event["group_id"])

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if state is None:
            state = {"org": event["org_id"], "m": {}, "name": None, "owner": None, "tmp": False,
                     "ends": None, "ends_ev": "", "last": [event["ts"], event["event_id"]], "flag": {}}
        kind = event["kind"]
        fwd: list[dict[str, Any]] = []  # membership facts for the member stage
        if kind == "message":
            findings, state = self._message(event, state, fwd)
        else:
            cfg = self.policy.membership_for(event["org_id"], event["group_id"])
            if kind == "member":
                findings, state = self._member(event, state, cfg, fwd)
            else:
                findings, state = self._group(event, state, cfg, fwd)
        return Outcome(findings, forward=fwd, state=state)

    def _message(self, event: dict[str, Any], state: dict[str, Any],
                 fwd: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        if event["msg_type"] in EXEMPT_TYPES:
            return [], state
        state["last"] = max(state["last"], [event["ts"], event["msg_id"]])
        members = state["m"]
        uid = event["sender_id"]
        before = members.get(uid)
        note_sender(members, event)
        if before is None or (event["sender_name"] and before[0] != event["sender_name"]):
            self._forward(fwd, event, uid, "seen" if before is None else "nickname", members[uid][0],
                          event["msg_id"], approved=False)
        cfg = self.policy.membership_for(event["org_id"], event["group_id"])
        found = impersonation(event, state) if cfg.enabled("member.impersonation") else None
        return ([] if found is None else [found]), state

    def _member(self, event: dict[str, Any], state: dict[str, Any], cfg: Membership,
                fwd: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        members = state["m"]
        uid, action, actor = event["user_id"], event["action"], event["actor_id"]
        actor_role = (members.get(actor) or [None, None])[1] if actor else None
        if actor and actor == state["owner"]:
            actor_role = "owner"
        before = members.get(uid)
        apply_member_event(members, event)
        findings = []
        if action == "join":
            invited = bool(actor) and actor != uid
            approved = invited and actor_role in PRIVILEGED
            if invited and not approved and cfg.enabled("member.unauthorized_invite"):
                findings.append(make_finding(
                    "member.unauthorized_invite", "medium", event["org_id"], event["group_id"], event["event_id"],
                    actor, event["ts"], {"invited": uid, "nickname": event["nickname"] or "",
                                         "inviter": members.get(actor, [actor])[0],
                                         "inviter_role": actor_role or "unknown"}))
            self._forward(fwd, event, uid, "join", event["nickname"], event["event_id"], approved=approved)
        elif action in ("leave", "kick"):
            if before is not None:
                self._forward(fwd, event, uid, "leave", None, event["event_id"], approved=False)
        elif action in ("nickname", "role") and event["nickname"] and (before or [None])[0] != event["nickname"]:
            self._forward(fwd, event, uid, "seen" if before is None else "nickname", event["nickname"],
                          event["event_id"], approved=False)
        return findings, state

    def _group(self, event: dict[str, Any], state: dict[str, Any], cfg: Membership,
               fwd: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Any]:
        if event["action"] == "dissolve":
            for uid in state["m"]:  # nobody is in a dissolved group any more
                self._forward(fwd, event, uid, "leave", None, event["event_id"], approved=False)
            return [], None  # nothing left to judge; a later event starts afresh
        findings = []
        if event["owner_id"]:
            state["owner"] = event["owner_id"]
            old = state["m"].get(event["owner_id"])
            state["m"][event["owner_id"]] = [old[0] if old else event["owner_id"], "owner"]
        if event["temporary"] is not None:
            state["tmp"] = event["temporary"]
        if event["ends_at"] is not None or event["action"] == "create":
            state["ends"], state["ends_ev"] = event["ends_at"], event["event_id"]
        if event["action"] == "create":
            state["last"] = max(state["last"], [event["ts"], event["event_id"]])
        flag = state["flag"]
        owner = state["owner"] or ""
        if event["registered"] is not None:
            if event["registered"]:
                flag.pop("group.unregistered", None)
            elif "group.unregistered" not in flag and cfg.enabled("group.unregistered"):
                flag["group.unregistered"] = event["event_id"]
                findings.append(make_finding("group.unregistered", "medium", event["org_id"], event["group_id"],
                                             event["event_id"], owner, event["ts"],
                                             {"name": event["name"] or state["name"] or "",
                                              "purpose": event["purpose"] or ""}))
        if event["name"]:
            state["name"] = event["name"]
            rx = cfg.name_re
            if rx is not None and not rx.search(event["name"]) and flag.get("group.name_format") != event["name"] \
                    and cfg.enabled("group.name_format"):
                flag["group.name_format"] = event["name"]
                findings.append(make_finding("group.name_format", "low", event["org_id"], event["group_id"],
                                             event["event_id"], owner, event["ts"],
                                             {"name": event["name"], "pattern": cfg.name_pattern}))
        return findings, state

    def _forward(self, fwd: list[dict[str, Any]], event: dict[str, Any], uid: str, action: str, nickname: str | None,
                 source: str, approved: bool) -> None:
        digest = hashlib.blake2b(f"{source}\x1f{uid}".encode(), digest_size=10).hexdigest()
        fwd.append({
            "kind": "membership", "event_id": f"mb-{digest}",
            "org_id": event["org_id"], "ts": event["ts"], "group_id": event["group_id"], "user_id": uid,
            "action": action, "nickname": nickname, "actor_id": event.get("actor_id"), "approved": approved,
            "source": source})

    def due(self, key: str, state: Any) -> int | None:
        """A temporary group's expiry, or the end of the current quiet spell, whichever comes first."""
        cfg = self.policy.membership_for(state["org"], key)
        flag = state["flag"]
        moments = []
        if state["tmp"] and state["ends"] is not None and flag.get("group.expired") != state["ends"]:
            moments.append(expiry(state["ends"], cfg))
        if flag.get("group.idle") != state["last"][0]:
            moments.append(state["last"][0] + cfg.idle_days * DAY_MS)
        return min(moments) if moments else None

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        now = ctx.now
        cfg = self.policy.membership_for(state["org"], key)
        flag = state["flag"]
        findings = []
        if state["tmp"] and state["ends"] is not None and flag.get("group.expired") != state["ends"]:
            due = expiry(state["ends"], cfg)
            if now >= due:
                flag = {**flag, "group.expired": state["ends"]}
                if cfg.enabled("group.expired"):
                    findings.append(make_finding(
                        "group.expired", "medium", state["org"], key, state["ends_ev"], state["owner"] or "", due,
                        {"name": state["name"] or "", "ends_at": state["ends"], "due": due,
                         "working_days": cfg.expire_working_days}))
        last_ts, last_id = state["last"]
        if flag.get("group.idle") != last_ts and now >= last_ts + cfg.idle_days * DAY_MS:
            flag = {**flag, "group.idle": last_ts}
            if cfg.enabled("group.idle"):
                findings.append(make_finding(
                    "group.idle", "low", state["org"], key, last_id, state["owner"] or "",
                    last_ts + cfg.idle_days * DAY_MS,
                    {"name": state["name"] or "", "last_message": last_ts, "idle_days": cfg.idle_days}))
        if flag is state["flag"]:
            return Outcome()
        return Outcome(findings, state={**state, "flag": flag})


def expiry(ends_at: int, cfg: Membership) -> int:
    """The end (local midnight) of the Nth working day after the day a temporary group's work ended."""
    day = datetime.fromtimestamp(ends_at / 1000, cfg.zone).date()
    left = cfg.expire_working_days
    while left > 0:
        day += timedelta(days=1)
        if day.isoweekday() in cfg.working_days:
            left -= 1
    end = datetime(day.year, day.month, day.day, tzinfo=cfg.zone) + timedelta(days=1)
    return int(end.timestamp() * 1000)


def copies(nickname: str, of: str) -> bool:
    """Whether a nickname copies another: the same after normalisation (symbols, spaces, width and
    case fold away), or it with up to 3 letters or digits before or after (王总2, wang王总). Words
    added make another name (王总助理 is the assistant)."""
    a, b = fold(nickname), fold(of)
    if len(b) < 2 or b not in a:
        return False
    extra = a.replace(b, "", 1)
    return len(extra) <= 3 and (a.startswith(b) or a.endswith(b)) and extra.isascii()


def impersonation(event: dict[str, Any], state: dict[str, Any]) -> dict[str, Any] | None:
    """`member.impersonation` for one message, or None."""
    uid = event["sender_id"]
    nickname, role = state["m"].get(uid, [uid, "member"])
    if role in PRIVILEGED or uid == state["owner"] or not event["text"]:
        return None
    request = cue("content.fraud", "request", fold(event["text"]))
    if request is None:
        return None
    for other, (name, other_role) in sorted(state["m"].items()):
        privileged = other_role in PRIVILEGED or other == state["owner"]
        if other != uid and privileged and copies(nickname, name):
            return make_finding("member.impersonation", "critical", event["org_id"], event["group_id"],
                                event["msg_id"], uid, event["ts"], {
                                    "nickname": nickname, "copies": {"user_id": other, "nickname": name,
                                                                     "role": "owner" if other == state["owner"]
                                                                     else other_role},
                                    "request": {"normalized": request}})
    return None
