"""The alert stage: non-urgent findings grouped per channel, group and rule as Alertmanager groups
them, in event time, so that replay and the stream send the same alerts.

Keyed by group. Its inputs are `alertable` facts forwarded from wherever the finding was made (the
group's own partition, or the member stage's), so like the member stage it queues them and applies
them at the timer in event-time order, ticked only up to the settled moment (`settles`).

Per (channel, rule, notice) a group collects findings. Its first finding sets the alert for
`group_wait` later; after an alert the next waits at least `group_interval`; a finding for the
same rule and member as one listed within `repeat_interval` is counted (`repeats`), not listed
again. An alert that would go out in the channel's quiet hours waits for their end and goes as
one digest. Nothing is dropped: every finding's id is in the alert that accounts for it.

State (plain JSON): {"org", "pend": [[ts, finding_id, channels, summary]],
"g": {gkey: {"c", "r", "n", "ids": [...], "items": [...], "rep", "fire", "sent"}},
"seen": {"channel|rule|user": ts}, "done": [finding ids of recent alerts]}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson

from pipeline.alerting.route import LISTED, alert_id, make_alert
from pipeline.detectors import Context, Outcome
from pipeline.detectors.content.quiet_hours import in_quiet_hours
from pipeline.policy import Alerts, Policy

DONE_KEPT = 512  # ids of findings already alerted, against a fact forwarded twice after a crash


class AlertStage:
    name = "alerts"
    kinds = frozenset({"alertable"})
    state_version = 1
    settles = True

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        return f"{event['org_id']}/{event['group_id']}"

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if state is None:
            state = {"org": event["org_id"], "gid": event["group_id"], "pend": [], "g": {}, "seen": {}, "done": []}
        finding = orjson.loads(event["finding"])
        fid = finding["finding_id"]
        if fid in state["done"] or any(p[1] == fid for p in state["pend"]) or any(
                fid in g["ids"] for g in state["g"].values()):
            return Outcome(state=state)
        state["pend"].append([event["ts"], fid, list(event["channels"]), finding])
        return Outcome(state=state)

    def due(self, key: str, state: Any) -> int | None:
        times: list[int] = [p[0] for p in state["pend"]]
        times += [g["fire"] for g in state["g"].values() if g["fire"] is not None]
        if times:
            return min(times)
        cfg = self.policy.alerts_for(state["org"], state["gid"])
        ends = [g["sent"] + cfg.group_interval_seconds * 1000 for g in state["g"].values()]
        ends += [t + cfg.repeat_interval_seconds * 1000 for t in state["seen"].values()]
        return max(ends) if ends else None

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        now = ctx.now
        cfg = self.policy.alerts_for(state["org"], state["gid"])
        state = orjson.loads(orjson.dumps(state))  # a copy: the stored state changes only by the outcome
        pend = sorted(state["pend"], key=lambda p: (p[0], p[1]))
        alerts: list[dict[str, Any]] = []
        while True:
            fires = [(g["fire"], k) for k, g in state["g"].items() if g["fire"] is not None and g["fire"] <= now]
            nxt_item = pend[0][0] if pend and pend[0][0] <= now else None
            nxt_fire = min(fires) if fires else None
            if nxt_item is None and nxt_fire is None:
                break
            if nxt_fire is None or (nxt_item is not None and nxt_item <= nxt_fire[0]):  # a fire at T takes T
                self._apply(state, cfg, pend.pop(0))
            else:
                alerts.append(self._fire(state, cfg, nxt_fire[1], nxt_fire[0]))
        state["pend"] = pend
        self._expire(state, cfg, now)
        if not state["pend"] and not state["g"] and not state["seen"]:
            return Outcome(alerts=alerts, state=None)
        return Outcome(alerts=alerts, state=state)

    def _apply(self, state: dict[str, Any], cfg: Alerts, item: list[Any]) -> None:
        ts, fid, channels, finding = item
        rule = finding["rule"]
        notice = finding["msg_id"] if rule.startswith("deadline.") else ""  # one reminder per notice
        for c in channels:
            gkey = f"{c}\x1f{rule}\x1f{notice}"
            g = state["g"].setdefault(gkey, {"c": c, "r": rule, "n": notice, "ids": [], "items": [], "rep": 0,
                                             "fire": None, "sent": None})
            g["ids"].append(fid)
            seen_key = f"{c}|{rule}|{finding['user_id']}"
            last = state["seen"].get(seen_key)
            if finding["user_id"] and last is not None and ts - last < cfg.repeat_interval_seconds * 1000:
                g["rep"] += 1
            else:
                state["seen"][seen_key] = ts
                if len(g["items"]) < LISTED:
                    g["items"].append(finding)
            if g["fire"] is None:
                fire = ts + cfg.group_wait_seconds * 1000
                if g["sent"] is not None:
                    fire = max(fire, g["sent"] + cfg.group_interval_seconds * 1000)
                g["fire"] = after_quiet(fire, cfg)

    def _fire(self, state: dict[str, Any], cfg: Alerts, gkey: str, at: int) -> dict[str, Any]:
        g = state["g"][gkey]
        alert = make_alert(g["c"], g["items"], state["org"], state["gid"], g["r"], at, cfg.tz,
                           "digest" if len(g["ids"]) > 1 else "finding", repeats=g["rep"],
                           aid=alert_id(g["c"], state["gid"], g["r"], g["n"], str(at)), ids=list(g["ids"]))
        state["done"] = (state["done"] + g["ids"])[-DONE_KEPT:]
        g.update(ids=[], items=[], rep=0, fire=None, sent=at)
        return alert

    def _expire(self, state: dict[str, Any], cfg: Alerts, now: int) -> None:
        interval, repeat = cfg.group_interval_seconds * 1000, cfg.repeat_interval_seconds * 1000
        state["g"] = {k: g for k, g in state["g"].items()
                      if g["fire"] is not None or g["ids"] or (g["sent"] is not None and now < g["sent"] + interval)}
        state["seen"] = {k: t for k, t in state["seen"].items() if now < t + repeat}


def after_quiet(at: int, cfg: Alerts) -> int:
    """`at`, or the end of the quiet hours it falls in (in the quiet hours' time zone)."""
    if cfg.quiet is None:
        return at
    start, end, zone = cfg.quiet
    local = in_quiet_hours(at, start, end, zone)
    if local is None:
        return at
    day = local.date() if local.time() < end else local.date() + timedelta(days=1)
    return int(datetime.combine(day, end, zone).timestamp() * 1000)
