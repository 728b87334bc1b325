"""Alerts for group owners, built from findings: one reminder per notice naming who has not
answered (点名), and one escalation per notice the next morning. Published to `qg.alerts`."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

KINDS = {"deadline.overdue": "deadline.reminder", "deadline.escalated": "deadline.escalation"}
ZONE = ZoneInfo("Asia/Shanghai")


def deadline_alerts(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    per_notice: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for f in findings:
        if f["rule"] in KINDS:
            per_notice[(f["rule"], f["group_id"], f["msg_id"])].append(f)
    alerts = []
    for (rule, group_id, msg_id), found in per_notice.items():
        found.sort(key=lambda f: f["user_id"])
        first = found[0]
        names = "、".join(f["evidence"]["name"] for f in found)
        deadline = datetime.fromtimestamp(first["evidence"]["deadline"] / 1000, ZONE).strftime("%m-%d %H:%M")
        if rule == "deadline.overdue":
            text = f"【提醒】以下{len(found)}位成员未在{deadline}前回复通知，请尽快回复：{names}"
        else:
            text = f"【督办】以下{len(found)}位成员经提醒后仍未回复{deadline}到期的通知，请在群里作情况说明：{names}"
        kind = KINDS[rule]
        alerts.append({
            "alert_id": hashlib.blake2b(f"{kind}\x1f{group_id}\x1f{msg_id}".encode(), digest_size=12).hexdigest(),
            "kind": kind, "org_id": first["org_id"], "group_id": group_id, "msg_id": msg_id, "ts": first["ts"],
            "deadline": first["evidence"]["deadline"],
            "members": [{"user_id": f["user_id"], "name": f["evidence"]["name"]} for f in found],
            "notice": first["evidence"]["text"], "text": text,
        })
    return alerts
