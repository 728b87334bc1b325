"""The ladder: strikes per member and group, verdicts, and the sanctions they lead to.

Keyed by the first half of a finding id, which hashes (group, member) alone (schemas.records.
finding_id): every finding about one member in one group, and every verdict naming one of them,
meet in one state with no lookup. Its inputs are forwarded from other partitions (`strike` facts
from wherever a finding was made, `verdict` facts from wherever a `feedback` event arrived), so
like the member stage it queues them and applies them at the timer in event-time order, ticked
only up to the settled moment (`settles`); replay's final tick applies the same sequence.
The settled moment bounds what producers' events forward; a finding made by another stage's timer
(a deadline) reaches the ladder when that timer fires, and the ladder may have passed its moment.
With the defaults such findings count only once confirmed, and a verdict comes after its finding
exists, so the order holds; a policy that counts them unconfirmed may see the stream and replay
differ on a sanction when a timer fires late (a per-stage watermark would close this).

- A finding is a strike unless it is withdrawn (`false_positive`); rules the policy leaves out
  (`sanctions.confirmed_only`, default `deadline.*`, and severities below `confirmed_below`) are
  strikes only once confirmed. An appealed finding still counts until a reviewer decides.
- After every change the strikes within the rolling window are counted; when they reach a step
  (default 1 → warn, 3 → mute 24 h, 5 → remove) higher than any sanction issued within the window,
  a `sanction.<action>` finding is made, its evidence the strikes. A sanction already issued stands
  when one of its strikes is later withdrawn (the warning was given, the mute served); the count
  drops, so the next step needs its strikes again.
- A verdict is a `finding_status` row (the history: who decided what, when). A verdict for a finding
  not seen yet waits `verdict_wait_seconds` (event time) and is then a dead letter with the reason.

State (plain JSON): {"org", "m": {"group|user": {"g", "u", "k": {fid: [ts, rule, severity, status,
msg_id, seq]}, "s": [[ts, step, fid, withdrawn]]}}, "pend": [[ts, rank, eid, item]], "wait": [[until, item]],
"done": [eid …]}
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.detectors import Context, Outcome, Row
from pipeline.policy import Policy, Sanctions
from schemas.records import ladder_key, make_finding

DONE_KEPT = 256  # inputs applied, against a fact forwarded twice after a crash
DAY_MS = 86_400_000
SEVERITY = {"warn": "medium", "mute": "high", "remove": "high"}
STATUS_OF = {"confirmed": "confirmed", "false_positive": "false_positive", "appeal": "appealed"}
TS, RULE, SEV, STATUS, MSG, SEQ = range(6)


class FeedbackRouter:
    """A reviewer's or member's `feedback`, wherever it arrived, forwarded to the finding's ladder."""

    name = "feedback"
    kinds = frozenset({"feedback"})
    state_version = 1

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy

    def state_key(self, event: dict[str, Any]) -> None:
        return None

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        verdict = {k: event[k] for k in ("org_id", "ts", "finding_id", "verdict", "actor_id", "note")}
        return Outcome(forward=[{**verdict, "kind": "verdict", "event_id": f"vd-{event['event_id']}",
                                 "feedback_id": event["event_id"]}])

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        return Outcome()

    def due(self, key: str, state: Any) -> int | None:
        return None


def strike_fact(finding: dict[str, Any]) -> dict[str, Any]:
    """The `strike` a finding forwards to its member's ladder."""
    keep = ("finding_id", "rule", "severity", "msg_id", "ts")
    return {"kind": "strike", "event_id": f"st-{finding['finding_id']}", "org_id": finding["org_id"],
            "ts": finding["ts"], "group_id": finding["group_id"], "user_id": finding["user_id"],
            "finding": orjson.dumps({k: finding[k] for k in keep}).decode()}


class LadderStage:
    name = "ladder"
    kinds = frozenset({"strike", "verdict"})
    state_version = 1
    settles = True

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        if event["kind"] == "verdict":
            return ladder_key(event["org_id"], event["finding_id"])
        return ladder_key(event["org_id"], orjson.loads(event["finding"])["finding_id"])

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if state is None:
            state = {"org": event["org_id"], "m": {}, "pend": [], "wait": [], "done": []}
        eid = event["event_id"]
        if eid in state["done"] or any(p[2] == eid for p in state["pend"]) or any(
                w[1]["eid"] == eid for w in state["wait"]):
            return Outcome(state=state)
        if event["kind"] == "strike":
            item = {"eid": eid, "g": event["group_id"], "u": event["user_id"], "f": orjson.loads(event["finding"])}
            state["pend"].append([event["ts"], 0, eid, item])
        else:
            item = {"eid": eid, "fid": event["finding_id"], "v": event["verdict"], "by": event["actor_id"] or "",
                    "note": event["note"], "fb": event["feedback_id"], "ts": event["ts"]}
            state["pend"].append([event["ts"], 1, eid, item])
        return Outcome(state=state)

    def due(self, key: str, state: Any) -> int | None:
        times: list[int] = [p[0] for p in state["pend"]] + [w[0] for w in state["wait"]]
        if times:
            return min(times)
        ends: list[int] = [min([e[TS] for e in m["k"].values()] + [s[0] for s in m["s"]])
                           + int(self._cfg(state, m["g"]).keep_days * DAY_MS) for m in state["m"].values()]
        return min(ends) if ends else None

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        now = ctx.now
        state = orjson.loads(orjson.dumps(state))  # a copy: the stored state changes only by the outcome
        out = Outcome()
        pend = sorted(state["pend"], key=lambda p: (p[0], p[1], p[2]))
        state["pend"] = [p for p in pend if p[0] > now]
        for ts, rank, eid, item in (p for p in pend if p[0] <= now):
            if rank == 0:
                self._strike(state, ts, item, out)
            else:
                self._verdict(state, ts, item, out)
            state["done"] = (state["done"] + [eid])[-DONE_KEPT:]
        for until, item in [w for w in state["wait"] if w[0] <= now]:
            state["wait"].remove([until, item])
            out.rows.append(_dead(item, f"verdict: finding {item['fid']} not seen within "
                                        f"{(until - item['ts']) // 1000} s of the verdict (unknown, or older than "
                                        f"sanctions.keep_days)"))
        self._prune(state, now)
        out.state = state if state["m"] or state["pend"] or state["wait"] else None
        return out

    # --- applying one input -------------------------------------------------------------------

    def _cfg(self, state: dict[str, Any], group_id: str) -> Sanctions:
        return self.policy.sanctions_for(state["org"], group_id)

    def _strike(self, state: dict[str, Any], ts: int, item: dict[str, Any], out: Outcome) -> None:
        f, gid, uid = item["f"], item["g"], item["u"]
        m = state["m"].setdefault(f"{gid}|{uid}", {"g": gid, "u": uid, "k": {}, "s": []})
        fid = f["finding_id"]
        if fid in m["k"]:
            return
        m["k"][fid] = [f["ts"], f["rule"], f["severity"], "open", f["msg_id"], 0]
        for w in [w for w in state["wait"] if w[1]["fid"] == fid]:
            state["wait"].remove(w)
            self._verdict(state, ts, w[1], out, evaluate=False)
        self._evaluate(state, m, ts, out)

    def _verdict(self, state: dict[str, Any], ts: int, item: dict[str, Any], out: Outcome,
                 evaluate: bool = True) -> None:
        fid = item["fid"]
        m = next((m for m in state["m"].values() if fid in m["k"]), None)
        if m is None:
            cfg = self._cfg(state, "")
            state["wait"].append([item["ts"] + cfg.verdict_wait_seconds * 1000, item])
            return
        entry = m["k"][fid]
        if item["v"] == "appeal" and entry[STATUS] == "false_positive":
            out.rows.append(_dead(item, f"verdict: finding {fid} is withdrawn already; there is nothing to appeal"))
            return
        entry[STATUS] = STATUS_OF[item["v"]]
        entry[SEQ] += 1
        out.rows.append(("finding_status", {
            "finding_id": fid, "org_id": state["org"], "group_id": m["g"], "user_id": m["u"], "rule": entry[RULE],
            "seq": entry[SEQ], "ts": item["ts"], "status": entry[STATUS], "verdict": item["v"],
            "actor_id": item["by"], "note": item["note"], "feedback_id": item["fb"]}))
        for s in m["s"]:  # a withdrawn sanction no longer holds the ladder at its step
            if s[2] == fid:
                s[3] = entry[STATUS] == "false_positive"
        if evaluate and not entry[RULE].startswith("sanction."):
            # a withdrawn sanction is not issued again for the same strikes: the next strike decides
            self._evaluate(state, m, ts, out)

    def _evaluate(self, state: dict[str, Any], m: dict[str, Any], now: int, out: Outcome) -> None:
        """Count the member's strikes in the window ending `now`; issue the step they reach."""
        if not m["u"]:
            return  # the group's own findings (group.*): their status is kept, no member is sanctioned
        cfg = self._cfg(state, m["g"])
        if not cfg.steps:
            return
        since = now - int(cfg.window_days * DAY_MS)
        counted = [(e[TS], fid, e) for fid, e in m["k"].items() if since < e[TS] <= now and _counts(cfg, e)]
        level = max((i for i, step in enumerate(cfg.steps) if step.strikes <= len(counted)), default=-1)
        issued = max((s[1] for s in m["s"] if since < s[0] <= now and not s[3]), default=-1)
        if level <= issued:
            return  # most strikes: no new step, and no need to order them
        strikes = sorted(counted, key=lambda s: (s[0], s[1]))
        step = cfg.steps[level]
        last = strikes[-1][2]
        evidence: dict[str, Any] = {
            "action": step.action, "step": level + 1, "count": len(strikes), "window_days": cfg.window_days,
            "strikes": [{"finding_id": fid, "rule": e[RULE], "severity": e[SEV], "ts": ts, "msg_id": e[MSG],
                         "status": e[STATUS]} for ts, fid, e in strikes]}
        if step.action == "mute":
            evidence["mute_hours"] = step.mute_hours
        finding = make_finding(f"sanction.{step.action}", SEVERITY[step.action], state["org"], m["g"], last[MSG],
                               m["u"], now, evidence)
        fid = finding["finding_id"]
        if any(s[2] == fid for s in m["s"]):
            return  # made for these strikes before, and withdrawn since: the next strike decides
        # A restarted worker applying again what a dead one did may have its strike fact back first
        # (it is in `k`): the sanction is sent again (storage keeps one) and keeps its review status.
        known = m["k"].get(fid)
        m["s"].append([now, level, fid, known is not None and known[STATUS] == "false_positive"])
        out.findings.append(finding)
        if known is None:  # known at once, before its strike fact comes back: a verdict may follow
            m["k"][fid] = [now, finding["rule"], finding["severity"], "open", last[MSG], 0]

    def _prune(self, state: dict[str, Any], now: int) -> None:
        """Forget findings and sanctions older than `keep_days` before `now`, the timer's moment. Not
        before: inputs applied later may be older than `now` (a worker catching up, a late partition),
        and a strike within `keep_days` is still counted against everything in its window."""
        for key, m in list(state["m"].items()):
            keep_since = now - int(self._cfg(state, m["g"]).keep_days * DAY_MS)
            m["k"] = {fid: e for fid, e in m["k"].items() if e[TS] > keep_since}
            m["s"] = [s for s in m["s"] if s[0] > keep_since]
            if not m["k"] and not m["s"]:
                del state["m"][key]


def _counts(cfg: Sanctions, e: list[Any]) -> bool:
    rule, status = e[RULE], e[STATUS]
    if rule.startswith("sanction.") or status == "false_positive" or not cfg.counts(rule):
        return False
    return status == "confirmed" or not cfg.needs_confirmation(rule, e[SEV])


def _dead(item: dict[str, Any], error: str) -> Row:
    """A verdict that cannot be applied: a dead letter with the feedback event's id and the reason."""
    event = {"kind": "feedback", "event_id": item["fb"], "finding_id": item["fid"], "verdict": item["v"],
             "actor_id": item["by"], "note": item["note"], "ts": item["ts"]}
    return ("deadletter", {"dl_id": f"verdict:{item['fb']}", "error": error, "event": event})

