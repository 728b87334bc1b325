"""`deadline.overdue` and `deadline.escalated`: who has not answered a notice in time.

State per group (plain JSON, in a Faust table in the worker):

    {"org": org_id, "members": {user_id: [name, role]},      # from member events and senders
     "notices": [{"id", "ts", "by", "text", "due", "basis", "esc",
                  "need": {user_id: name},                    # who must answer
                  "mentioned": [user_id …],                   # named with @ (not @所有人)
                  "ans": {user_id: [ts, "quote" | "ack"]},    # first answer of each
                  "left": {user_id: ts},                      # left the group while it was open
                  "fired": 0 | 1 | 2}]}                       # overdue fired, escalation fired

Who must answer: the members the notice @-mentions; for @所有人 or no mention, every current member
except the sender. Members who join later were not asked; members who leave before the deadline
are not overdue.

Which notice an answer belongs to, with several open at once (the rule the issue asks to write down):
1. a quote (reply_to) of an open notice that still waits for this member;
2. otherwise an acknowledgement (收到, 已阅 …) goes to the most recent open notice that @-mentions
   this member and still waits for them;
3. otherwise to the most recent open notice that still waits for them.
One answer settles one notice; a member answering three notices says 收到 three times.

Timers: at the deadline, one `deadline.overdue` per member without an answer at or before it (the
finding's ts is the deadline); the next day at `escalate_at`, one `deadline.escalated` per member
still without an answer. Both are decided on event times only (answers and departures up to the
moment), so the worker's wall-clock timer and replay's final tick find the same members. An answer
after the deadline is recorded with its delay (the `responses` rows), and is not a finding.
"""

from __future__ import annotations

from typing import Any, cast

from pipeline.detectors import EXEMPT_TYPES, Context, Outcome, Row
from pipeline.detectors.deadline.when import due, escalation
from pipeline.detectors.membership import apply_member_event, note_sender
from pipeline.policy import Policy
from pipeline.text.normalize import fold
from pipeline.text.notice import asks_reply, is_ack
from schemas.records import make_finding

TEXT_KEPT = 200  # characters of the notice kept for evidence and alerts


class DeadlineDetector:
    name = "deadline"
    kinds = frozenset({"message", "member"})

    state_version = 1

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        return cast(str, event["group_id"])

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if state is None:
            state = {"org": event["org_id"], "members": {}, "notices": []}
        if event["kind"] == "member":
            apply_member_event(state["members"], event)
            if event["action"] in ("leave", "kick"):
                for n in state["notices"]:
                    if event["user_id"] in n["need"]:
                        n["left"].setdefault(event["user_id"], event["ts"])
            return Outcome(state=state)
        if event["msg_type"] in EXEMPT_TYPES:
            return Outcome(state=state)
        note_sender(state["members"], event)
        text = event["text"] or ""
        folded = fold(text) if text else ""
        asks = bool(text) and asks_reply(text, folded)
        rows: list[Row] = []
        if not asks:
            self._answer(event, state, text, folded, rows)
        else:
            self._open(event, state, text, rows)
        return Outcome(rows=rows, state=state)

    def due(self, key: str, state: Any) -> int | None:
        """The next deadline, escalation or release of a notice (asked after every event of the group:
        one pass, and the policy looked up only for a notice that waits for its release)."""
        soonest: int | None = None
        keep = -1
        for n in state["notices"]:
            fired = n["fired"]
            if fired < 1:
                moment = n["due"]
            elif fired < 2:
                moment = n["esc"]
            else:
                if keep < 0:
                    keep = self.policy.deadline_for(state["org"], key).keep_days * 86_400_000
                moment = n["esc"] + keep + 1
            if soonest is None or moment < soonest:
                soonest = moment
        return None if soonest is None else int(soonest)

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        now = ctx.now
        if not state["notices"]:
            return Outcome()
        cfg = self.policy.deadline_for(state["org"], key)
        findings: list[dict[str, Any]] = []
        changed = False
        kept = []
        for n in state["notices"]:
            if n["fired"] < 1 and now >= n["due"]:
                if cfg.enabled("deadline.overdue"):
                    findings += self._late(state, key, n, n["due"], "deadline.overdue", "low")
                n = {**n, "fired": 1}
                changed = True
            if n["fired"] < 2 and now >= n["esc"]:
                if cfg.enabled("deadline.escalated"):
                    findings += self._late(state, key, n, n["esc"], "deadline.escalated", "medium")
                n = {**n, "fired": 2}
                changed = True
            if n["fired"] == 2 and now > n["esc"] + cfg.keep_days * 86_400_000:
                changed = True
                continue  # no answer can change anything any more
            kept.append(n)
        if not changed:
            return Outcome()
        return Outcome(findings, state={**state, "notices": kept})

    # --- notices and answers ------------------------------------------------------------------

    def _open(self, event: dict[str, Any], state: dict[str, Any], text: str, rows: list[Row]) -> None:
        cfg = self.policy.deadline_for(event["org_id"], event["group_id"])
        members = state["members"]
        mentioned = [m for m in event["mentions"] if m != "@all"]
        if mentioned:
            need = {m: members.get(m, [m])[0] for m in mentioned}
        else:
            need = {m: v[0] for m, v in members.items() if m != event["sender_id"]}
        deadline, basis = due(text, event["ts"], cfg)
        notice = {"id": event["msg_id"], "ts": event["ts"], "by": event["sender_id"], "text": text[:TEXT_KEPT],
                  "due": deadline, "basis": basis, "esc": escalation(deadline, cfg), "need": need,
                  "mentioned": mentioned, "ans": {}, "left": {}, "fired": 0}
        state["notices"].append(notice)
        rows.append(("notices", {
            "notice_id": event["msg_id"], "org_id": event["org_id"], "group_id": event["group_id"],
            "sender_id": event["sender_id"], "ts": event["ts"], "due": deadline, "basis": basis,
            "responders": len(need), "text": notice["text"]}))

    def _answer(self, event: dict[str, Any], state: dict[str, Any], text: str, folded: str, rows: list[Row]) -> None:
        uid, ts = event["sender_id"], event["ts"]
        waiting = [n for n in state["notices"] if uid in n["need"] and uid not in n["ans"] and n["ts"] <= ts]
        if not waiting:
            return
        chosen, how = None, ""
        if event["reply_to"]:
            chosen = next((n for n in waiting if n["id"] == event["reply_to"]), None)
            how = "quote"
        if chosen is None and text and is_ack(text, folded):
            named = [n for n in waiting if uid in n["mentioned"]]
            chosen = max(named or waiting, key=lambda n: n["ts"])
            how = "ack"
        if chosen is None:
            return
        chosen["ans"][uid] = [event["ts"], how]
        delay = event["ts"] - chosen["ts"]
        rows.append(("responses", {
            "notice_id": chosen["id"], "org_id": event["org_id"], "group_id": event["group_id"],
            "user_id": uid, "msg_id": event["msg_id"], "ts": event["ts"], "delay_ms": delay,
            "late": event["ts"] > chosen["due"], "how": how}))

    def _late(self, state: dict[str, Any], group_id: str, n: dict[str, Any], moment: int, rule: str,
              severity: str) -> list[dict[str, Any]]:
        """One finding per member asked who had neither answered nor left by `moment`."""
        out = []
        for uid, name in n["need"].items():
            answered = n["ans"].get(uid)
            if answered is not None and answered[0] <= moment:
                continue
            left = n["left"].get(uid)
            if left is not None and left <= moment:
                continue
            name = state["members"].get(uid, [name])[0] or name
            evidence = {"name": name, "deadline": n["due"], "basis": n["basis"], "notice_ts": n["ts"],
                        "notice_by": n["by"], "text": n["text"]}
            if rule == "deadline.escalated":
                evidence["escalated_at"] = moment
            out.append(make_finding(rule, severity, state["org"], group_id, n["id"], uid, moment, evidence))
        return out

