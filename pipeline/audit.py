"""`qunguard audit members`: the weekly check the policies ask for (每周检查群成员,对不应加入或未实名
人员予以剔除出群): per group, who is in it now although the roster says they left, whose nickname
breaks the group's real-name format, and who came in from outside without approval, with counts.

It reads the `memberships` table (each person's standing per group, written by the member stage,
pipeline/detectors/governance/member.py): the current standing is the version with the highest seq.
Counts are computed in ClickHouse; only the people with a problem come back to Python.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import IO

from pipeline.sink import queries
from pipeline.sink.backends import Backend

PROBLEMS = queries.AUDIT_PROBLEMS


@dataclass
class GroupAudit:
    org_id: str
    group_id: str
    name: str = ""
    members: int = 0
    people: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: {p: [] for p in PROBLEMS})

    def count(self, problem: str) -> int:
        return len(self.people[problem])

    @property
    def problems(self) -> int:
        return sum(self.count(p) for p in PROBLEMS)


def audit_members(backend: Backend, org: str | None = None, group: str | None = None) -> list[GroupAudit]:
    """Every group with members, in (org, group) order, with its problem members."""
    db = backend.database
    groups: dict[tuple[str, str], GroupAudit] = {}
    for org_id, group_id, members in backend.query(queries.group_member_counts(db, org, group)):
        groups[(org_id, group_id)] = GroupAudit(org_id, group_id, members=int(members))
    for org_id, group_id, user_id, nickname, name, *flags in backend.query(queries.problem_members(db, org, group)):
        audit = groups[(org_id, group_id)]
        for problem, flag in zip(PROBLEMS, flags, strict=True):
            if int(flag):
                audit.people[problem].append((user_id, nickname or name))
    named = dict(backend.query(queries.group_names(db, org)))
    for (_, group_id), audit in groups.items():
        audit.name = named.get(group_id, "")
    return list(groups.values())


def _people(people: list[tuple[str, str]]) -> str:
    return "; ".join(f"{who} ({uid})" for uid, who in people)


CSV_HEADER = ("org_id", "group_id", "group_name", "members", "problem", "user_id", "nickname")


def write_csv(audits: list[GroupAudit], out: IO[str]) -> None:
    """One row per person and problem (a spreadsheet filters and counts them); a group without a
    problem is one row with an empty problem, so every group audited is there with its members."""
    w = csv.writer(out)
    w.writerow(CSV_HEADER)
    for a in audits:
        rows = [(p, uid, who) for p in PROBLEMS for uid, who in a.people[p]] or [("", "", "")]
        for problem, uid, who in rows:
            w.writerow((a.org_id, a.group_id, a.name, a.members, problem, uid, who))


def print_table(audits: list[GroupAudit], console) -> None:
    from rich.table import Table

    flagged = [a for a in audits if a.problems]
    totals = [sum(a.count(p) for a in audits) for p in PROBLEMS]
    table = Table(title=f"{len(audits)} groups audited, {len(flagged)} with problems: departed {totals[0]}, "
                        f"nicknames {totals[1]}, external {totals[2]}")
    # At 80 columns the ids keep their width and the rest wraps: nothing is cut.
    for col, key in (("org", "org_id"), ("group", "group_id")):
        table.add_column(col, no_wrap=True, min_width=max((len(getattr(a, key)) for a in flagged), default=5))
    for col in ("name", "members", "departed (离职未退群)", "nickname (未实名)", "external (外部人员)"):
        table.add_column(col, overflow="fold")
    for a in flagged:
        table.add_row(a.org_id, a.group_id, a.name, str(a.members),
                      *(f"{a.count(p)}: {_people(a.people[p])}" if a.count(p) else "" for p in PROBLEMS))
    console.print(table)
