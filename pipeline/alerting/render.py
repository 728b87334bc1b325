"""An alert, or several merged into one digest, as a message a person can act on, in Chinese, and
as each platform's request body (wire formats: shared/payloads/). Pure: no network, no clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.alerting.labels import SEVERITY_LABELS, label

MAX_CHARS = 3_500  # WeCom markdown takes 4,096 bytes; every platform takes at least this much
SHOWN = 5  # findings listed per alert in a message


def when(ts: int, tz: str) -> str:
    return datetime.fromtimestamp(ts / 1000, ZoneInfo(tz)).strftime("%m-%d %H:%M")


def _who(f: dict[str, Any]) -> str:
    ev = f.get("evidence") or {}
    name = ev.get("name") or ev.get("sender_name") or ev.get("nickname") or ""
    return f"{name}({f['user_id']})" if name and f["user_id"] else (name or f["user_id"] or "")


def _evidence(f: dict[str, Any]) -> str:
    """What made it a finding, in a few words: the terms, the masked personal data, the domain,
    the repeated text or the count; the evidence is masked as in findings."""
    ev = f.get("evidence") or {}
    if f["rule"].startswith("sanction."):
        action = {"warn": "警告", "mute": f"禁言{ev.get('mute_hours', 24):g}小时", "remove": "移出群聊"}
        rules = "、".join(dict.fromkeys(label(s["rule"]) for s in ev.get("strikes", ())))
        return (f"{ev.get('window_days', 30):g}天内违规{ev.get('count')}次（{rules}），"
                f"建议{action.get(ev.get('action', ''), '')}，请群主处理")[:80]
    if ev.get("matches"):
        return "命中：" + "、".join(dict.fromkeys(str(m.get("text") or m.get("term")) for m in ev["matches"]))[:60]
    if ev.get("personal"):
        return "、".join(str(p.get("masked")) for p in ev["personal"])[:60]
    if ev.get("links"):
        return "链接：" + "、".join(str(x.get("domain")) for x in ev["links"])[:60]
    if "normalized" in ev and "count" in ev:
        return f"“{str(ev['normalized'])[:20]}”连续{ev['count']}次"
    for key, what in (("messages", "条消息"), ("stickers", "个表情"), ("images", "张图片")):
        if isinstance(ev.get(key), dict):
            c = ev[key]
            return f"{c.get('window_s')}秒内{c.get('count')}{what}"
    if ev.get("inviter"):
        return f"由{ev['inviter']}拉入"
    if ev.get("nickname") is not None and f["rule"].startswith("member."):
        roster = f"，花名册：{ev.get('department', '')}{ev['name']}" if ev.get("name") else ""
        return f"群昵称“{ev['nickname']}”{roster}"
    if ev.get("name"):
        return str(ev["name"])[:40]
    return ""


def mentions(alert: dict[str, Any]) -> list[str]:
    """Whom a deadline reminder names (点名): the silent members, as the platform's user ids."""
    if not alert["rule"].startswith("deadline."):
        return []
    return sorted({f["user_id"] for f in alert["findings"] if f["user_id"]})


def lines(alert: dict[str, Any], group_name: str, base_url: str = "") -> list[str]:
    """One alert as lines of text: what, where, who, when, the evidence, a link."""
    tz = alert["tz"]
    head = (f"【{SEVERITY_LABELS.get(alert['severity'], alert['severity'])}】{label(alert['rule'])} · "
            f"{group_name or alert['group_id']}")
    if alert["count"] > 1:
        head += f" · {alert['count']}条"
    if alert["repeats"]:
        head += f"(其中重复{alert['repeats']}次)"
    out = [head]
    if alert["rule"].startswith("deadline."):
        names = "、".join(_who(f) for f in alert["findings"])
        due = alert["findings"][0]["evidence"].get("deadline") if alert["findings"] else None
        when_due = when(due, tz) if isinstance(due, int) else when(alert["ts"], tz)
        verb = "未在" + when_due + "前回复通知" if alert["rule"] == "deadline.overdue" else "经提醒后仍未回复通知"
        out.append(f"以下{alert['count']}位成员{verb}：{names}")
    else:
        for f in alert["findings"][:SHOWN]:
            ev = _evidence(f)
            out.append(f"- {when(f['ts'], tz)} {_who(f)}" + (f"：{ev}" if ev else ""))
        if alert["count"] > SHOWN:
            out.append(f"- …另有{alert['count'] - SHOWN}条")
    if base_url and alert["findings"]:
        out.append(f"详情：{base_url.rstrip('/')}/findings/{alert['findings'][0]['finding_id']}")
    return out


def text(alerts: list[dict[str, Any]], names: dict[str, str], base_url: str = "") -> str:
    """One alert, or a digest of several, within MAX_CHARS."""
    parts: list[str] = []
    if len(alerts) > 1:
        total = sum(a["count"] for a in alerts)
        parts.append(f"qunguard 群规告警汇总：{len(alerts)}组，共{total}条")
    used = sum(len(p) for p in parts)
    for i, a in enumerate(alerts):
        block = "\n".join(lines(a, names.get(a["group_id"], ""), base_url))
        if used + len(block) > MAX_CHARS:
            rest = alerts[i:]
            parts.append(f"…另有{len(rest)}组共{sum(x['count'] for x in rest)}条，请到控制台查看")
            break
        parts.append(block)
        used += len(block) + 2
    return "\n\n".join(parts)


def subject(alerts: list[dict[str, Any]], names: dict[str, str]) -> str:
    if not alerts:
        return "[qunguard]"
    a = alerts[0]
    if len(alerts) > 1:
        return f"[qunguard] 群规告警汇总：{len(alerts)}组，共{sum(x['count'] for x in alerts)}条"
    return f"[qunguard] {label(a['rule'])} · {names.get(a['group_id']) or a['group_id']} · {a['count']}条"


def body(kind: str, alerts: list[dict[str, Any]], names: dict[str, str], base_url: str = "") -> dict[str, Any]:
    """The request body for a robot (wecom, dingtalk, feishu) or the generic webhook."""
    content = text(alerts, names, base_url)
    at = sorted({u for a in alerts for u in mentions(a)})
    if kind == "wecom":
        if at:
            return {"msgtype": "text", "text": {"content": content, "mentioned_list": at}}
        return {"msgtype": "markdown", "markdown": {"content": content}}
    if kind == "dingtalk":
        suffix = "".join(f" @{u}" for u in at)
        return {"msgtype": "markdown", "markdown": {"title": subject(alerts, names), "text": content + suffix},
                "at": {"atUserIds": at, "isAtAll": False}}
    if kind == "feishu":
        tags = "".join(f'<at user_id="{u}"></at>' for u in at)
        return {"msg_type": "text", "content": {"text": content + (" " + tags if tags else "")}}
    return {"text": content, "alerts": alerts}
