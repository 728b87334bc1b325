"""What each console page shows, read from ClickHouse for one org: plain functions of a backend,
the signed-in user's org and a window, so they are tested without a web server. Every query is in
pipeline/sink/queries.py and filters on the org (no page reads another org's rows)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml
from markupsafe import Markup, escape

from pipeline.alerting.labels import LABELS
from pipeline.charts import FAMILIES
from pipeline.sink import queries
from pipeline.sink.backends import Backend

DAY_MS = 86_400_000
OPEN = ("open", "appealed")
STATUSES = ("open", "appealed", "confirmed", "false_positive")
EXPLANATIONS: dict[str, dict[str, str]] = yaml.safe_load(
    (Path(__file__).parent.parent / "data" / "rules.yaml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Window:
    """Whole days in the org's calendar, ending with the day of the org's latest finding (so a
    console over last month's data opens on that data, not on an empty today)."""
    start: datetime
    end: datetime
    latest: datetime | None  # the latest finding's time; None when the org has none

    @property
    def ms(self) -> tuple[int, int]:
        return int(self.start.timestamp() * 1000), int(self.end.timestamp() * 1000)

    @property
    def days(self) -> list[str]:
        n = (self.end - self.start).days
        return [(self.start + timedelta(days=i)).date().isoformat() for i in range(n)]


def window(backend: Backend, org: str, days: int, tz: ZoneInfo, now_ms: int) -> Window:
    latest_ms, n = backend.query(queries.console_latest(backend.database, org))[0]
    latest = datetime.fromtimestamp(int(latest_ms) / 1000, tz) if int(n) else None
    last = (latest or datetime.fromtimestamp(now_ms / 1000, tz)).date()
    end = datetime(last.year, last.month, last.day, tzinfo=tz) + timedelta(days=1)
    return Window(end - timedelta(days=days), end, latest)


def _ints(rows: Iterable[tuple]) -> list[list[Any]]:
    """Rows as lists with chDB's quoted 64-bit integers as ints."""
    out = []
    for r in rows:
        out.append([int(v) if isinstance(v, str) and v.lstrip("-").isdigit() and len(v) < 20 else v for v in r])
    return out


def overview(backend: Backend, org: str, w: Window, tz: ZoneInfo) -> dict[str, Any]:
    db = backend.database
    s, e = w.ms
    per_day: dict[str, dict[str, int]] = {d: {} for d in w.days}
    for day, family, n in backend.query(queries.report_by_day(db, org, s, e)):
        if 0 <= int(day) < len(w.days):
            per_day[w.days[int(day)]][str(family)] = int(n)
    cells = {(int(wd), int(h)): int(n) for wd, h, n in backend.query(queries.console_heatmap(db, org, s, e, tz.key))}
    names = group_names(backend, org)
    by_rule = [[r, LABELS.get(r, ""), int(n)] for r, n in backend.query(queries.report_by_rule(db, org, s, e))]
    answers = []
    for g, notices, asked, in_time in backend.query(queries.report_answer_rates(db, org, s, e)):
        asked, in_time = int(asked), int(in_time or 0)
        answers.append([g, names.get(g, ""), int(notices), asked, in_time, f"{in_time / asked:.0%}" if asked else ""])
    return {
        "per_day": list(per_day.items()), "heatmap": cells, "by_rule": by_rule,
        "total": sum(r[2] for r in by_rule),
        "groups": [[g, names.get(g, ""), n, m] for g, n, m in
                   _ints(backend.query(queries.report_top_groups(db, org, s, e)))],
        "members": _ints(backend.query(queries.report_top_members(db, org, s, e))),
        "answers": answers,
        "status": _ints(backend.query(queries.console_queue_counts(db, org, s, e))),
        "families": FAMILIES,
    }


def deadletters(backend: Backend, org: str, since_s: int) -> list[list[Any]]:
    return _ints(backend.query(queries.console_deadletters(backend.database, org, since_s)))


def group_names(backend: Backend, org: str) -> dict[str, str]:
    return dict(backend.query(queries.group_names(backend.database, org)))


def queue(backend: Backend, org: str, w: Window, statuses: tuple[str, ...], rule: str, group: str,
          limit: int = 200) -> list[dict[str, Any]]:
    s, e = w.ms
    rows = backend.query(queries.console_queue(backend.database, org, statuses, rule, group, s, e, limit))
    keys = ("finding_id", "rule", "severity", "group_id", "user_id", "ts", "status", "evidence")
    return [dict(zip(keys, r, strict=True)) | {"ts": int(r[5]), "summary": summary(r[7])} for r in rows]


def summary(evidence_json: str, limit: int = 60) -> str:
    """A line a reviewer can scan: the matched terms, or the evidence's plain values."""
    try:
        evidence = orjson.loads(evidence_json) if evidence_json else {}
    except orjson.JSONDecodeError:
        return evidence_json[:limit]
    terms = list(dict.fromkeys(w for _, _, w in spans(evidence) if w))
    if not terms and isinstance(evidence, dict):
        terms = [f"{k}={v}" for k, v in evidence.items() if isinstance(v, str | int | float) and v != ""]
    text = ", ".join(terms)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def rules(backend: Backend, org: str) -> list[str]:
    return [r for (r,) in backend.query(queries.console_rules(backend.database, org))]


def finding(backend: Backend, org: str, finding_id: str) -> dict[str, Any] | None:
    db = backend.database
    rows = backend.query(queries.console_finding(db, org, finding_id))
    if not rows:
        return None
    keys = ("finding_id", "rule", "severity", "group_id", "msg_id", "user_id", "ts", "evidence", "policy_version")
    f = dict(zip(keys, rows[0], strict=True))
    f["ts"] = int(f["ts"])
    f["evidence"] = orjson.loads(f["evidence"]) if f["evidence"] else {}
    f["history"] = [dict(zip(("seq", "ts", "status", "verdict", "actor_id", "note"), r, strict=True))
                    | {"ts": int(r[1])} for r in backend.query(queries.console_history(db, org, finding_id))]
    f["status"] = f["history"][-1]["status"] if f["history"] else "open"
    f["explanation"] = EXPLANATIONS.get(f["rule"], {})
    f["message"], f["before"], f["after"] = None, [], []
    if f["msg_id"] and f["group_id"]:
        msg = backend.query(queries.console_message(db, org, f["group_id"], f["msg_id"]))
        if msg:
            f["message"] = _message(msg[0])
            f["message"]["html"] = highlight(f["message"]["text"], f["evidence"])
            at = f["message"]["ts"]
            f["before"] = [_message(r) for r in reversed(backend.query(
                queries.console_around(db, org, f["group_id"], at, before=True)))]
            f["after"] = [_message(r) for r in backend.query(queries.console_around(db, org, f["group_id"], at, False))]
    f["group_name"] = group_names(backend, org).get(f["group_id"], "")
    return f


def _message(row: tuple) -> dict[str, Any]:
    keys = ("msg_id", "sender_id", "sender_name", "msg_type", "text", "ts")
    return dict(zip(keys, row, strict=True)) | {"ts": int(row[5])}


def spans(evidence: Any) -> list[tuple[int, int, str]]:
    """(start, end, what) of every piece of evidence that points into the message's text."""
    out: list[tuple[int, int, str]] = []
    if isinstance(evidence, dict):
        span = evidence.get("span")
        if (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span)
                and evidence.get("field", "text") == "text"):
            out.append((span[0], span[1], str(evidence.get("term") or evidence.get("kind") or evidence.get("url", ""))))
        for v in evidence.values():
            if isinstance(v, dict | list):
                out += spans(v)
    elif isinstance(evidence, list):
        for v in evidence:
            out += spans(v)
    return out


def highlight(text: str, evidence: Any) -> Markup:
    """The text, escaped, with the evidence's spans marked (overlapping spans merged)."""
    merged: list[list[Any]] = []
    for start, end, what in sorted(spans(evidence)):
        start, end = max(0, start), min(len(text), end)
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            if what not in merged[-1][2]:
                merged[-1][2].append(what)
        else:
            merged.append([start, end, [what]])
    out, at = [], 0
    for start, end, whats in merged:
        out.append(escape(text[at:start]))
        out.append(Markup('<mark title="{}">{}</mark>').format(", ".join(w for w in whats if w), text[start:end]))
        at = end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def group(backend: Backend, org: str, group_id: str) -> dict[str, Any] | None:
    db = backend.database
    if not int(backend.query(queries.console_group_exists(db, org, group_id))[0][0]):
        return None
    name_rows = backend.query(queries.console_group_name(db, org, group_id))
    members = [dict(zip(("user_id", "present", "nickname", "name", "departed", "nickname_bad", "external"), r,
                        strict=True)) for r in _ints(backend.query(queries.console_members(db, org, group_id)))]
    return {
        "group_id": group_id, "name": name_rows[0][0] if name_rows else "",
        "members": members,
        "present": sum(1 for m in members if m["present"]),
        "problems": sum(1 for m in members if m["present"] and (m["departed"] or m["nickname_bad"] or m["external"])),
        "rules": _ints(backend.query(queries.console_group_rules(db, org, group_id))),
        "recent": _recent(backend.query(queries.console_recent(db, org, "group_id", group_id))),
        "notices": _ints(backend.query(queries.console_answer_rates(db, org, group_id))),
    }


def member(backend: Backend, org: str, user_id: str) -> dict[str, Any] | None:
    db = backend.database
    groups = [dict(zip(("group_id", "present", "nickname", "name", "departed", "nickname_bad", "external"), r,
                       strict=True)) for r in _ints(backend.query(queries.console_member_groups(db, org, user_id)))]
    strikes = _ints(backend.query(queries.console_member_strikes(db, org, user_id)))
    if not groups and not strikes and not int(backend.query(queries.console_member_exists(db, org, user_id))[0][0]):
        return None
    recent = _recent(backend.query(queries.console_recent(db, org, "user_id", user_id, limit=100)))
    return {"user_id": user_id, "groups": groups, "strikes": strikes, "recent": recent,
            "sanctions": [f for f in recent if f["rule"].startswith("sanction.")],
            "name": next((g["name"] for g in groups if g["name"]), ""), "names": group_names(backend, org)}


def _recent(rows: Iterable[tuple]) -> list[dict[str, Any]]:
    keys = ("finding_id", "rule", "severity", "group_id", "user_id", "ts", "status")
    return [dict(zip(keys, r, strict=True)) | {"ts": int(r[5])} for r in rows]


def findings_of(backend: Backend, org: str, finding_ids: list[str]) -> list[str]:
    """The ones among these finding ids that are the org's."""
    return [f for (f,) in backend.query(queries.console_findings_of(backend.database, org, finding_ids))]
