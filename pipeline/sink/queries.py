"""Every SQL query qunguard sends, in one place: the migrations' ledger, the sink's recovery
checks, the membership audit and the demo's summary (the Grafana panels' SQL lives in their
dashboard JSON, deploy/grafana). Table definitions are the numbered migrations in
schemas/migrations/; tests/test_migrations.py checks the sink's columns against them."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.sink.backends import quote

LEDGER = """CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(version UInt32, name String, applied_at DateTime DEFAULT now())
ENGINE = ReplacingMergeTree() ORDER BY version"""


def create_database(db: str) -> str:
    return f"CREATE DATABASE IF NOT EXISTS {db}"


def ledger(db: str) -> str:
    return LEDGER.format(db=db)


def applied_migrations(db: str) -> str:
    return f"SELECT version FROM {db}.schema_migrations"


def stored_since(db: str, table: str, key: str, topic: str, partition: int, offset: int) -> str:
    """The keys (and their offsets) a table holds from one partition, from `offset` on."""
    return (f"SELECT {key}, src_offset FROM {db}.{table} WHERE src_topic = '{quote(topic)}' "
            f"AND src_partition = {int(partition)} AND src_offset >= {int(offset)}")


def keys_stored(db: str, table: str, key: str, keys: Sequence[str]) -> str:
    """Which of these keys a table holds."""
    values = ", ".join(f"'{quote(k)}'" for k in keys)
    return f"SELECT DISTINCT {key} FROM {db}.{table} WHERE {key} IN ({values})"


def count_rows(db: str, table: str) -> str:
    return f"SELECT count() FROM {db}.{table}"


# --- the membership audit (pipeline/audit.py) ------------------------------------------------------

AUDIT_PROBLEMS = ("departed", "nickname_bad", "external")
_NOW = tuple(f"now_{p}" for p in AUDIT_PROBLEMS)  # aliases must not shadow the columns they aggregate

_CURRENT = """
SELECT org_id, group_id, user_id,
       argMax(present, seq) AS now_present, argMax(nickname, seq) AS now_nickname, argMax(name, seq) AS now_name,
       argMax(nickname_bad, seq) AS now_nickname_bad, argMax(departed, seq) AS now_departed,
       argMax(external, seq) AS now_external
FROM {db}.memberships {where}
GROUP BY org_id, group_id, user_id
"""


def _current_memberships(db: str, org: str | None, group: str | None) -> str:
    """Each person's current standing per group: the version with the highest seq."""
    conds = [f"{col} = '{quote(v)}'" for col, v in (("org_id", org), ("group_id", group)) if v]
    return _CURRENT.format(db=db, where=("WHERE " + " AND ".join(conds)) if conds else "")


def group_member_counts(db: str, org: str | None, group: str | None) -> str:
    """(org_id, group_id, members present), in (org, group) order."""
    return (f"SELECT org_id, group_id, count() FROM ({_current_memberships(db, org, group)}) "
            "WHERE now_present = 1 GROUP BY org_id, group_id ORDER BY org_id, group_id")


def problem_members(db: str, org: str | None, group: str | None) -> str:
    """(org_id, group_id, user_id, nickname, name, *one flag per AUDIT_PROBLEMS) of present members
    with a problem."""
    return (f"SELECT org_id, group_id, user_id, now_nickname, now_name, {', '.join(_NOW)} "
            f"FROM ({_current_memberships(db, org, group)}) "
            f"WHERE now_present = 1 AND ({' OR '.join(_NOW)}) ORDER BY org_id, group_id, user_id")


def group_names(db: str) -> str:
    """(group_id, the latest name its `group` events gave it)."""
    return (f"SELECT group_id, argMax(visitParamExtractString(payload, 'name'), ts) FROM {db}.raw_events "
            f"WHERE kind = 'group' AND visitParamExtractString(payload, 'name') != '' GROUP BY group_id")


# --- the review loop (pipeline/review/) ------------------------------------------------------------

def reviewed_content(db: str, org: str | None) -> str:
    """(org_id, rule, evidence, message text, status) of content findings a reviewer decided on."""
    where = f" AND c.org_id = '{quote(org)}'" if org else ""
    return ("SELECT c.org_id, c.rule, c.evidence, m.text, c.status "
            f"FROM {db}.findings_current AS c INNER JOIN "
            f"(SELECT org_id, group_id, msg_id, any(text) AS text FROM {db}.messages GROUP BY org_id, group_id, msg_id)"
            " AS m ON c.org_id = m.org_id AND c.group_id = m.group_id AND c.msg_id = m.msg_id "
            f"WHERE c.rule LIKE 'content.%' AND c.status IN ('confirmed', 'false_positive'){where}")


def findings_by_status(db: str) -> str:
    """(status, findings): what the review queue holds and what was decided."""
    return f"SELECT status, count() FROM {db}.findings_current GROUP BY status ORDER BY status"


def sanctions(db: str, limit: int = 8) -> str:
    """(group_id, user_id, rule, strikes) of the latest sanctions not withdrawn."""
    return ("SELECT group_id, user_id, rule, visitParamExtractInt(evidence, 'count') "
            f"FROM {db}.findings_current WHERE rule LIKE 'sanction.%' AND status != 'false_positive' "
            f"ORDER BY ts DESC LIMIT {int(limit)}")


# --- the demo's summary (pipeline/devtools/demo.py) ------------------------------------------------

def events_by_kind(db: str) -> str:
    return f"SELECT kind, count() FROM {db}.raw_events GROUP BY kind ORDER BY kind"


def findings_by_rule(db: str) -> str:
    return f"SELECT rule, count() FROM {db}.findings GROUP BY rule ORDER BY rule"


def busiest_groups(db: str, limit: int = 5) -> str:
    """(group_id, messages, senders, its five most frequent tokens of two characters or more)."""
    return (f"SELECT group_id, count() AS n, uniqExact(sender_id), "
            "arrayStringConcat(arraySlice(topK(5)(arrayJoin(arrayFilter(x -> lengthUTF8(x) > 1, tokens))), 1, 5), ' ') "
            f"FROM {db}.messages GROUP BY group_id ORDER BY n DESC LIMIT {int(limit)}")


def deadletter_reasons(db: str, limit: int = 5) -> str:
    return f"SELECT error, count() FROM {db}.deadletter GROUP BY error ORDER BY count() DESC LIMIT {int(limit)}"


# --- the notifier (pipeline/alerting/notifier.py) ---------------------------------------------------

def alerts_settled(db: str, alert_ids: Sequence[str]) -> str:
    """Which of these alerts a notifier has settled already: sent, given up or refused."""
    values = ", ".join(f"'{quote(a)}'" for a in alert_ids)
    return (f"SELECT DISTINCT alert_id FROM {db}.alert_deliveries WHERE alert_id IN ({values}) "
            "AND status IN ('sent', 'dead', 'config_error')")


# What the README's operations section shows: alerts the worker decided that never reached their
# channel (no `sent` attempt), with their last attempt's status and error.
UNDELIVERED = """SELECT a.alert_id, a.channel, a.rule, a.group_id, a.ts, d.status, d.error
FROM {db}.alerts AS a
LEFT JOIN (SELECT alert_id, argMax(status, at) AS status, argMax(error, at) AS error, max(status = 'sent') AS ok
           FROM {db}.alert_deliveries GROUP BY alert_id) AS d USING alert_id
WHERE d.ok = 0 OR d.ok IS NULL
ORDER BY a.ts"""


def undelivered_alerts(db: str) -> str:
    return UNDELIVERED.format(db=db)


# --- the weekly report (pipeline/report.py) ---------------------------------------------------------
# Findings that stand (not withdrawn) of one org in [start, end) ms, event time.

def _standing(db: str, org: str, start: int, end: int) -> str:
    return (f"SELECT * FROM {db}.findings_current WHERE org_id = '{quote(org)}' AND ts >= {int(start)} "
            f"AND ts < {int(end)} AND status != 'false_positive'")


def report_by_rule(db: str, org: str, start: int, end: int) -> str:
    return f"SELECT rule, count() FROM ({_standing(db, org, start, end)}) GROUP BY rule ORDER BY rule"


def report_by_day(db: str, org: str, start: int, end: int) -> str:
    """(day index from `start`, the org's local midnight, rule family, findings)."""
    return (f"SELECT intDiv(ts - {int(start)}, 86400000) AS day, "
            f"splitByChar('.', rule)[1] AS family, count() FROM ({_standing(db, org, start, end)}) "
            "GROUP BY day, family ORDER BY day, family")


def report_top_groups(db: str, org: str, start: int, end: int, limit: int = 10) -> str:
    return (f"SELECT group_id, count(), uniqExact(user_id) FROM ({_standing(db, org, start, end)}) "
            f"WHERE group_id != '' GROUP BY group_id ORDER BY count() DESC, group_id LIMIT {int(limit)}")


def report_top_members(db: str, org: str, start: int, end: int, limit: int = 10) -> str:
    return (f"SELECT user_id, count(), uniqExact(group_id), countIf(rule LIKE 'sanction.%') "
            f"FROM ({_standing(db, org, start, end)}) WHERE user_id != '' AND rule NOT LIKE 'group.%' "
            f"GROUP BY user_id ORDER BY count() DESC, user_id LIMIT {int(limit)}")


def report_answer_rates(db: str, org: str, start: int, end: int) -> str:
    """(group, notices, answers asked for, answered in time) for notices posted in the week."""
    return (f"SELECT n.group_id, count(), sum(n.responders), sum(r.in_time) FROM "
            f"(SELECT notice_id, group_id, any(responders) AS responders FROM {db}.notices "
            f"WHERE org_id = '{quote(org)}' AND ts >= {int(start)} AND ts < {int(end)} "
            f"GROUP BY notice_id, group_id) AS n LEFT JOIN "
            f"(SELECT notice_id, uniqExactIf(user_id, late = 0) AS in_time FROM {db}.responses "
            f"WHERE org_id = '{quote(org)}' GROUP BY notice_id) AS r USING (notice_id) "
            f"GROUP BY n.group_id ORDER BY n.group_id")


def report_sanctions(db: str, org: str, start: int, end: int) -> str:
    return (f"SELECT ts, group_id, user_id, rule, visitParamExtractInt(evidence, 'count') "
            f"FROM ({_standing(db, org, start, end)}) WHERE rule LIKE 'sanction.%' ORDER BY ts, group_id, user_id")
