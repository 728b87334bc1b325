"""From findings to alerts: the routing step the engine runs on every outcome.

An urgent finding (severity at or above the policy's `urgent_severity`) becomes an alert at once
for each of its channels; findings of one rule about one message in one outcome (a notice's
overdue members, all found at the same tick) go out together. Every other finding is forwarded as
an `alertable` fact to its group's alert stage (stage.py), which groups them in event time.
Deterministic: the same findings give the same alerts, with the same ids, in replay and stream.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from pipeline.policy import Policy
from schemas.records import SEVERITY_RANK

LISTED = 20  # findings shown in one alert; every finding is counted and its id kept


def alert_id(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()


def summary(f: dict[str, Any]) -> dict[str, Any]:
    """What an alert carries of a finding (the evidence is masked already, as in findings)."""
    return {k: f[k] for k in ("finding_id", "rule", "severity", "msg_id", "user_id", "ts", "evidence")}


def make_alert(channel: str, findings: list[dict[str, Any]], org_id: str, group_id: str, rule: str, at: int,
               tz: str, kind: str, repeats: int = 0, aid: str | None = None,
               ids: list[str] | None = None) -> dict[str, Any]:
    """`findings` are those listed; `ids` every finding the alert accounts for (default: those)."""
    findings = sorted(findings, key=lambda f: (f["ts"], f["user_id"], f["finding_id"]))
    severity = max((f["severity"] for f in findings), key=SEVERITY_RANK.__getitem__, default="low")
    ids = ids if ids is not None else [f["finding_id"] for f in findings]
    return {
        "alert_id": aid or alert_id(channel, *ids),
        "kind": kind, "channel": channel, "org_id": org_id, "group_id": group_id, "rule": rule,
        "severity": severity, "ts": at, "tz": tz, "count": len(ids), "repeats": repeats,
        "finding_ids": ids, "findings": [summary(f) for f in findings[:LISTED]],
    }


def route(findings: list[dict[str, Any]], policy: Policy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(alerts to send now, `alertable` facts for the alert stages)."""
    now: dict[tuple[str, str, str, str, str], list[dict[str, Any]]] = {}  # channel, group, rule, msg, tz
    later: list[dict[str, Any]] = []
    for f in findings:
        cfg = policy.alerts_for(f["org_id"], f["group_id"])
        channels = cfg.channels(f["rule"], f["severity"])
        if not channels:
            continue
        if cfg.urgent(f["severity"]):
            for c in channels:
                now.setdefault((c, f["group_id"], f["rule"], f["msg_id"], cfg.tz), []).append(f)
        else:
            later.append({"kind": "alertable", "event_id": f"al-{f['finding_id']}", "org_id": f["org_id"],
                          "ts": f["ts"], "group_id": f["group_id"] or f["org_id"], "channels": list(channels),
                          "finding": orjson.dumps(summary(f)).decode()})
    alerts = []
    for (c, group_id, rule, _, tz), found in now.items():
        alerts.append(make_alert(c, found, found[0]["org_id"], group_id, rule, max(f["ts"] for f in found), tz,
                                 "finding"))
    return alerts, later
