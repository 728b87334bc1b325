"""`qunguard report`: one org's week for the security team, as HTML, an Excel workbook or CSV.

The week is an ISO week (2026-W47) in the org's calendar (Asia/Shanghai: Monday 00:00 to Monday
00:00 local time), read in event time. What it holds: findings that stand (withdrawn ones left
out) by rule against the week before, per day and rule family, the groups and members with most,
answer rates to the notices posted that week, the membership problems as they are now (the audit),
and the sanctions proposed. The HTML draws its charts as inline SVG: no script, no internet.
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.alerting.labels import LABELS
from pipeline.audit import PROBLEMS, audit_members
from pipeline.charts import FAMILIES, bars
from pipeline.config import ConfigError
from pipeline.sink import queries
from pipeline.sink.backends import Backend

DAY_MS = 86_400_000
ORG_TZ = ZoneInfo("Asia/Shanghai")  # the policies' calendar
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass
class Table:
    name: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Report:
    org: str
    week: str
    start: datetime
    end: datetime
    tables: list[Table]
    per_day: list[tuple[str, dict[str, int]]]  # (local date, family → findings)

    def table(self, name: str) -> Table:
        return next(t for t in self.tables if t.name == name)

    @property
    def total(self) -> int:
        """Findings that stand this week."""
        return sum(int(r[2]) for r in self.table("findings by rule").rows)


# The files a report is written as, with the MIME type it is attached to a mail with.
FORMATS = {".html": ("text", "html"), ".htm": ("text", "html"), ".csv": ("text", "csv"),
           ".xlsx": ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")}


def check_format(out: Path) -> str:
    """The output's suffix, or a ConfigError naming the option."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"report --out: {out.name}: write .html, .xlsx or .csv")
    return suffix


def week_bounds(week: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    m = _WEEK.fullmatch(week)
    if not m:
        raise ConfigError(f"report --week: {week!r} is not an ISO week like 2026-W47")
    try:
        monday = date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1)
    except ValueError as exc:
        raise ConfigError(f"report --week: {week!r}: {exc}") from None
    start = datetime(monday.year, monday.month, monday.day, tzinfo=tz)
    return start, start + timedelta(days=7)


def build(backend: Backend, org: str, week: str, tz: ZoneInfo = ORG_TZ) -> Report:
    start, end = week_bounds(week, tz)
    s, e = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    db = backend.database
    this = dict(backend.query(queries.report_by_rule(db, org, s, e)))
    before = dict(backend.query(queries.report_by_rule(db, org, s - 7 * DAY_MS, s)))
    by_rule = Table("findings by rule", ["rule", "名称", "this week", "week before", "change"])
    for rule in sorted(set(this) | set(before)):
        now, then = int(this.get(rule, 0)), int(before.get(rule, 0))
        by_rule.rows.append([rule, LABELS.get(rule, ""), now, then, now - then])
    days = [(start + timedelta(days=i)).date().isoformat() for i in range(7)]
    counts: dict[int, dict[str, int]] = {i: {} for i in range(7)}
    for day, family, n in backend.query(queries.report_by_day(db, org, s, e)):
        if 0 <= int(day) < 7:
            counts[int(day)][str(family)] = int(n)
    per_day = [(days[i], counts[i]) for i in range(7)]
    daily = Table("findings per day", ["date", *FAMILIES, "total"],
                  [[d, *(c.get(f, 0) for f in FAMILIES), sum(c.values())] for d, c in per_day])
    names = dict(backend.query(queries.group_names(db, org)))
    groups = Table("groups with most findings", ["group_id", "group", "findings", "members involved"],
                   [[g, names.get(g, ""), n, m] for g, n, m in backend.query(queries.report_top_groups(db, org, s, e))])
    members = Table("members with most findings", ["user_id", "findings", "groups", "sanctions"],
                    [list(r) for r in backend.query(queries.report_top_members(db, org, s, e))])
    answers = Table("answer rates to notices", ["group_id", "group", "notices", "answers asked", "in time", "rate"])
    for g, notices, asked, in_time in backend.query(queries.report_answer_rates(db, org, s, e)):
        asked, in_time = int(asked), int(in_time or 0)
        answers.rows.append([g, names.get(g, ""), int(notices), asked, in_time,
                             f"{in_time / asked:.0%}" if asked else ""])
    problems = Table("membership problems (now)", ["group_id", "group", "members", *PROBLEMS])
    for a in audit_members(backend, org=org):
        if a.problems:
            problems.rows.append([a.group_id, a.name or names.get(a.group_id, ""), a.members,
                                  *(a.count(p) for p in PROBLEMS)])
    sanctions = Table("sanctions proposed", ["time", "group_id", "user_id", "sanction", "strikes"])
    for ts, g, u, rule, strikes in backend.query(queries.report_sanctions(db, org, s, e)):
        when = datetime.fromtimestamp(int(ts) / 1000, tz).strftime("%Y-%m-%d %H:%M")
        sanctions.rows.append([when, g, u, LABELS.get(rule, rule), int(strikes)])
    return Report(org, week, start, end, [by_rule, daily, groups, members, answers, problems, sanctions], per_day)


def write(report: Report, out: Path) -> None:
    suffix = check_format(out)
    if suffix == ".csv":
        with out.open("w", encoding="utf-8-sig", newline="") as f:  # the BOM: Excel opens UTF-8 CSV right
            write_csv(report, f)
    elif suffix == ".xlsx":
        write_xlsx(report, out)
    else:
        out.write_text(render_html(report), encoding="utf-8")


def write_csv(report: Report, f: Any) -> None:
    """Every table in one file: its name on a line, its header, its rows, a blank line."""
    w = csv.writer(f)
    for t in report.tables:
        w.writerow([t.name])
        w.writerow(t.headers)
        w.writerows(t.rows)
        w.writerow([])


def write_xlsx(report: Report, out: Path | Any) -> None:
    """To a path or a binary file."""
    from openpyxl import Workbook  # type: ignore[import-untyped]

    book = Workbook()
    book.remove(book.active)
    for t in report.tables:
        sheet = book.create_sheet(t.name[:31])  # Excel's limit on a sheet name
        sheet.append(t.headers)
        for row in t.rows:
            sheet.append(row)
    book.save(out)


def render_html(report: Report) -> str:
    title = f"qunguard · {report.org} · {report.week}"
    period = f"{report.start:%Y-%m-%d} – {(report.end - timedelta(days=1)):%Y-%m-%d} ({report.start.tzname()})"
    parts = [f"<!doctype html><html lang=zh><meta charset=utf-8><title>{_e(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style>",
             f"<h1>{_e(title)}</h1><p>{_e(period)}; findings that stand (withdrawn ones left out)</p>",
             "<h2>findings per day</h2>", bars(report.per_day)]
    for t in report.tables:
        parts.append(f"<h2>{_e(t.name)}</h2><table><tr>{''.join(f'<th>{_e(h)}</th>' for h in t.headers)}</tr>")
        parts += [f"<tr>{''.join(f'<td>{_e(v)}</td>' for v in row)}</tr>" for row in t.rows]
        parts.append("</table>" + ("" if t.rows else "<p>none</p>"))
    return "\n".join(parts) + "\n</html>\n"


def _e(v: Any) -> str:
    return html.escape(str(v))


def mail(report: Report, channel: Any, attachment: Path | None, timeout: float = 30.0) -> Any:
    """Send the report through an smtp alert channel: the HTML as the body, the file attached."""
    from email.message import EmailMessage

    from pipeline.alerting.channels import deliver_mail

    msg = EmailMessage()
    msg["Subject"] = f"qunguard 周报 · {report.org} · {report.week} · {report.total} 条违规"
    msg["From"] = channel.sender or ""
    msg["To"] = ", ".join(channel.to)
    msg.set_content(f"{report.org} {report.week}: {report.total} findings that stand. The report is attached "
                    "and below as HTML.")
    msg.add_alternative(render_html(report), subtype="html")
    if attachment is not None:
        maintype, subtype = FORMATS[check_format(attachment)]
        msg.add_attachment(attachment.read_bytes(), maintype=maintype, subtype=subtype, filename=attachment.name)
    return deliver_mail(channel, msg, timeout)
