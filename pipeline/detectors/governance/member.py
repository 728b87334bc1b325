"""The member stage of governance: `member.nickname`, `member.departed`, `member.external`, keyed by
org and user: one person's roster entry beside every group they are in.

State per person (plain JSON):

    {"org": org_id, "uid": user_id,
     "r": [name, department, status] | None,               # the roster entry (HR directory)
     "g": {group_id: {"nick": str | None, "ap": bool,      # nickname; joined with approval
                      "bad": str | None,                   # the nickname reported as wrong
                      "dep": bool, "ext": bool}},          # departed / external reported
     "pend": [[ts, rank, event_id, event]],                # inputs not yet applied
     "done": [event_id …], "seq": int}                     # recently applied; row version

Inputs wait in `pend` and are applied at the timer in event-time order (at the same ms, group facts
before the roster: a removal and the roster change in one moment is no departure), so the order in
which the roster's partition and the groups' partitions deliver them does not matter: the worker
ticks this stage only up to the moment every partition's forwards have been published (`settles`;
pipeline/delivery/settled.py), even when a restarted partition forwards them late, and replay's
final tick applies the same sequence.

Rules, applied per event, each finding's msg_id being the event that made it so:
- `member.nickname`: the nickname does not follow the group's templates (nickname.py), or by
  default does not contain the roster name. Checked on join, on every new nickname and when the
  roster name or department changes; one finding per non-conforming nickname, none once fixed.
  Without a roster entry a format that names the person cannot be judged: no finding.
- `member.departed`: the roster says left while the person is in the group, found when the roster
  changes (every group at once) and when such a person joins; once per group until they leave it.
- `member.external`: someone with no roster entry joins and the inviter was not owner or admin
  (nobody authorised approved). A sender seen without a join is not judged: how they came in is unknown.
Every change to a (group, person) pair is a `memberships` row for ClickHouse: the audit's source.
"""

from __future__ import annotations

from typing import Any

from pipeline.detectors import Context, Outcome, Row
from pipeline.detectors.governance.nickname import conforms
from pipeline.policy import Policy
from schemas.records import make_finding

DONE_KEPT = 32  # applied event ids remembered, against a fact forwarded twice after a crash


class MemberDetector:
    name = "member"
    kinds = frozenset({"roster", "membership"})
    state_version = 1
    settles = True  # its inputs come from other partitions: ticked only up to where they have settled

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        return f"{event['org_id']}/{event['user_id']}"

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if state is None:
            state = {"org": event["org_id"], "uid": event["user_id"], "r": None, "g": {}, "pend": [], "done": [],
                     "seq": 0}
        eid = event["event_id"]
        if eid in state["done"] or any(p[2] == eid for p in state["pend"]):
            return Outcome(state=state)  # a fact forwarded twice (its group stage re-read a record)
        if event["kind"] == "roster":
            item = [event["name"], event["department"], event["status"]]
            state["pend"].append([event["ts"], 1, eid, item])
        else:
            item = [event["group_id"], event["action"], event["nickname"], event["approved"], event["source"]]
            state["pend"].append([event["ts"], 0, eid, item])
        return Outcome(state=state)

    def due(self, key: str, state: Any) -> int | None:
        """Inputs wait for the timer, to be applied in event-time order (module docstring)."""
        return min(p[0] for p in state["pend"]) if state["pend"] else None

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        now = ctx.now
        pend = state["pend"]
        if not pend or min(p[0] for p in pend) > now:
            return Outcome()
        pend = sorted(pend)
        due = [p for p in pend if p[0] <= now]
        state = {**state, "g": {g: dict(e) for g, e in state["g"].items()}, "pend": pend[len(due):]}
        findings: list[dict[str, Any]] = []
        rows: list[Row] = []
        for ts, rank, eid, item in due:
            if rank == 1:
                findings += self._roster(state, ts, eid, item, rows)
            else:
                findings += self._membership(state, ts, item, rows)
            state["done"] = (state["done"] + [eid])[-DONE_KEPT:]
        return Outcome(findings, rows=rows, state=state)

    # --- applying one input -------------------------------------------------------------------

    def _roster(self, state: dict[str, Any], ts: int, eid: str, entry: list[Any],
                rows: list[Row]) -> list[dict[str, Any]]:
        if state["r"] == entry:
            return []
        state["r"] = entry
        state["rid"] = [eid, ts]  # the roster event, for member.departed's identity
        findings = []
        for gid in state["g"]:
            findings += self._judge(state, gid, ts, eid, rows, joined=False)
        return findings

    def _membership(self, state: dict[str, Any], ts: int, item: list[Any], rows: list[Row]) -> list[dict[str, Any]]:
        gid, action, nickname, approved, source = item
        groups = state["g"]
        if action == "leave":
            if groups.pop(gid, None) is not None:
                self._row(rows, state, gid, ts, None)
            return []
        entry = groups.get(gid)
        if entry is None:
            entry = groups[gid] = {"nick": None, "ap": False, "bad": None, "dep": False, "ext": False}
        if action == "join":
            entry["ap"] = approved
            entry["j"] = [ts, source]  # the join, for member.departed's identity
        if nickname is not None:
            entry["nick"] = nickname
        return self._judge(state, gid, ts, source, rows, joined=action == "join")

    def _judge(self, state: dict[str, Any], gid: str, ts: int, msg_id: str, rows: list[Row],
               joined: bool) -> list[dict[str, Any]]:
        """Re-judge one (group, person) after a change; report what newly breaks a rule."""
        entry, roster, org, uid = state["g"][gid], state["r"], state["org"], state["uid"]
        cfg = self.policy.membership_for(org, gid)
        name, dept, status = roster if roster is not None else (None, None, None)
        evidence = {"nickname": entry["nick"] or "", "name": name or "", "department": dept or ""}
        findings = []
        if status == "left":
            if not entry["dep"]:
                entry["dep"] = True
                if cfg.enabled("member.departed"):
                    # Named after the later (in event time) of the roster entry that says "left" and
                    # the join: the same finding whichever of the two reached this stage first, and a
                    # new one for a new join.
                    rts, rid = (state["rid"][1], state["rid"][0]) if state.get("rid") else (ts, msg_id)
                    at, named = max([(rts, rid), tuple(entry.get("j") or (rts, rid))])
                    findings.append(make_finding("member.departed", "high", org, gid, named, uid, at, evidence))
        else:
            entry["dep"] = False
        if joined and roster is None and not entry["ap"] and not entry["ext"]:
            entry["ext"] = True
            if cfg.enabled("member.external"):
                findings.append(make_finding("member.external", "high", org, gid, msg_id, uid, ts, evidence))
        ok = conforms(entry["nick"], cfg.nickname, name, dept) if entry["nick"] else None
        if ok is False and entry["bad"] != entry["nick"]:
            entry["bad"] = entry["nick"]
            if cfg.enabled("member.nickname"):
                findings.append(make_finding("member.nickname", "low", org, gid, msg_id, uid, ts,
                                             {**evidence, "formats": list(cfg.nickname) or ["contains {name}"]}))
        elif ok:
            entry["bad"] = None
        self._row(rows, state, gid, ts, entry, ok is False)
        return findings

    def _row(self, rows: list[Row], state: dict[str, Any], gid: str, ts: int, entry: dict[str, Any] | None,
             bad: bool = False) -> None:
        state["seq"] += 1
        roster = state["r"] or ("", "", "")
        rows.append(("memberships", {
            "org_id": state["org"], "group_id": gid, "user_id": state["uid"], "seq": state["seq"], "ts": ts,
            "present": entry is not None, "nickname": (entry or {}).get("nick") or "",
            "name": roster[0], "department": roster[1], "status": roster[2],
            "nickname_bad": bad, "departed": entry is not None and roster[2] == "left",
            "external": entry is not None and state["r"] is None and not entry["ap"]}))
