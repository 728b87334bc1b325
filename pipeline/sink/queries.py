"""Every SQL query qunguard sends, in one place: the migrations' ledger, the sink's recovery
checks, the membership audit and the demo's summary (the Grafana panels' SQL lives in their
dashboard JSON, deploy/grafana). Table definitions are the numbered migrations in
schemas/migrations/; tests/test_migrations.py checks the sink's columns against them."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.sink.backends import quote


def _eq(column: str, value: str) -> str:
    return f"{column} = '{quote(value)}'"


def _org(org: str) -> str:
    return _eq("org_id", org)


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


def group_names(db: str, org: str | None = None) -> str:
    """(group_id, the latest name its `group` events gave it), of one org when `org` is given."""
    of_org = f"{_org(org)} AND " if org else ""
    return (f"SELECT group_id, argMax(visitParamExtractString(payload, 'name'), ts) FROM {db}.raw_events "
            f"WHERE {of_org}kind = 'group' AND visitParamExtractString(payload, 'name') != '' GROUP BY group_id")


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
            # topKArray, not topK over arrayJoin: an arrayJoin in the same SELECT made count() count tokens
            "arrayStringConcat(topKArray(5)(arrayFilter(x -> lengthUTF8(x) > 1, tokens)), ' ') "
            f"FROM {db}.messages GROUP BY group_id ORDER BY n DESC LIMIT {int(limit)}")


def deadletter_reasons(db: str, limit: int = 5) -> str:
    return f"SELECT error, count() FROM {db}.deadletter GROUP BY error ORDER BY count() DESC LIMIT {int(limit)}"


# --- the OneBot enforcer (pipeline/adapters/enforce.py) ----------------------------------------------

def actions_done(db: str, action_ids: Sequence[str]) -> str:
    """Which of these sanction actions the platform has carried out already."""
    values = ", ".join(f"'{quote(a)}'" for a in action_ids)
    return f"SELECT DISTINCT action_id FROM {db}.sanction_actions WHERE action_id IN ({values}) AND status = 'ok'"


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
# Findings that stand (not withdrawn) of one org in [start, end) ms, event time. Read without FINAL:
# the sink stores each finding once (the fault tier checks it), and a scan without FINAL and the
# status join is several times faster (bench/bench_console.py); the withdrawn ones are a small set.

def _withdrawn(db: str, org: str) -> str:
    """The org's findings whose latest verdict is false_positive."""
    return (f"(SELECT finding_id FROM {db}.finding_status WHERE {_org(org)} GROUP BY finding_id "
            "HAVING argMax(status, seq) = 'false_positive')")


def _standing(db: str, org: str, start: int, end: int) -> str:
    return (f"SELECT * FROM {db}.findings WHERE {_org(org)} AND ts >= {int(start)} AND ts < {int(end)} "
            f"AND finding_id NOT IN {_withdrawn(db, org)}")


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


# --- the console (pipeline/console/) ----------------------------------------------------------------
# Every console query takes the signed-in user's org and filters on it inside the innermost read of
# each table, so no row of another org is ever read, let alone shown (and the primary keys, which
# start with org_id, keep a big table's other orgs unread).

def _org_findings(db: str, org: str, where: str = "") -> str:
    """One org's findings with their current review status (findings_current, read for one org)."""
    more = f" AND {where}" if where else ""
    return (f"SELECT f.*, if(s.finding_id = '', 'open', s.status) AS status, s.actor_id AS decided_by, "
            f"s.ts AS decided_at FROM (SELECT * FROM {db}.findings FINAL WHERE {_org(org)}{more}) AS f "
            f"LEFT JOIN (SELECT finding_id, argMax(status, seq) AS status, argMax(actor_id, seq) AS actor_id, "
            f"max(ts) AS ts FROM {db}.finding_status FINAL WHERE {_org(org)} GROUP BY finding_id) AS s "
            "USING (finding_id)")


def console_latest(db: str, org: str) -> str:
    """The org's latest finding time (ms): the end of the console's default window."""
    return f"SELECT max(ts), count() FROM {db}.findings WHERE {_org(org)}"


def console_heatmap(db: str, org: str, start: int, end: int, tz: str) -> str:
    """(ISO weekday 1–7, hour 0–23, findings that stand) in the org's time zone."""
    return (f"SELECT toDayOfWeek(t) AS wd, toHour(t) AS h, count() FROM (SELECT "
            f"toDateTime(intDiv(ts, 1000), '{quote(tz)}') AS t FROM ({_standing(db, org, start, end)})) GROUP BY wd, h")


def console_queue(db: str, org: str, statuses: Sequence[str], rule: str, group: str, start: int, end: int,
                  limit: int) -> str:
    """(finding_id, rule, severity, group_id, user_id, ts, status, evidence) to review: most severe
    first, then oldest."""
    conds = [f"ts >= {int(start)}", f"ts < {int(end)}"]
    if rule:
        conds.append(f"rule = '{quote(rule)}'")
    if group:
        conds.append(f"group_id = '{quote(group)}'")
    wanted = ", ".join(f"'{quote(s)}'" for s in statuses)
    return (f"SELECT finding_id, rule, severity, group_id, user_id, ts, status, evidence "
            f"FROM ({_org_findings(db, org, ' AND '.join(conds))}) WHERE status IN ({wanted}) "
            f"ORDER BY multiIf(severity = 'critical', 0, severity = 'high', 1, severity = 'medium', 2, 3), ts "
            f"LIMIT {int(limit)}")


def console_queue_counts(db: str, org: str, start: int, end: int) -> str:
    """(status, findings) of the org's findings in [start, end)."""
    return (f"SELECT if(s.finding_id = '', 'open', s.status) AS st, count() FROM "
            f"(SELECT finding_id FROM {db}.findings WHERE {_org(org)} AND ts >= {int(start)} AND ts < {int(end)}) AS f "
            f"LEFT JOIN (SELECT finding_id, argMax(status, seq) AS status FROM {db}.finding_status WHERE {_org(org)} "
            "GROUP BY finding_id) AS s USING (finding_id) GROUP BY st ORDER BY st")


def console_rules(db: str, org: str) -> str:
    return f"SELECT DISTINCT rule FROM {db}.findings WHERE {_org(org)} ORDER BY rule"


def console_finding(db: str, org: str, finding_id: str) -> str:
    """(finding_id, rule, severity, group_id, msg_id, user_id, ts, evidence, policy_version) of one
    finding (its status is its history's last: console_history)."""
    return (f"SELECT finding_id, rule, severity, group_id, msg_id, user_id, ts, evidence, policy_version "
            f"FROM {db}.findings WHERE {_org(org)} AND {_eq('finding_id', finding_id)} LIMIT 1")


def console_findings_of(db: str, org: str, finding_ids: Sequence[str]) -> str:
    """Which of these finding ids are the org's."""
    values = ", ".join(f"'{quote(f)}'" for f in finding_ids) or "''"
    return f"SELECT DISTINCT finding_id FROM {db}.findings WHERE {_org(org)} AND finding_id IN ({values})"


def console_history(db: str, org: str, finding_id: str) -> str:
    """(seq, ts, status, verdict, actor_id, note) of one finding's verdicts, in order."""
    return (f"SELECT seq, ts, status, verdict, actor_id, note FROM {db}.finding_status FINAL "
            f"WHERE {_org(org)} AND finding_id = '{quote(finding_id)}' ORDER BY seq")


_MESSAGE = "msg_id, sender_id, sender_name, msg_type, text, ts"


def console_message(db: str, org: str, group: str, msg_id: str) -> str:
    """(msg_id, sender_id, sender_name, msg_type, text, ts) of one message."""
    return (f"SELECT {_MESSAGE} FROM {db}.messages WHERE {_org(org)} AND group_id = '{quote(group)}' "
            f"AND msg_id = '{quote(msg_id)}' LIMIT 1")


def console_around(db: str, org: str, group: str, ts: int, before: bool, limit: int = 5) -> str:
    """The messages just before (or after) `ts` in a group, nearest first."""
    op, order = ("<", "DESC") if before else (">", "ASC")
    return (f"SELECT {_MESSAGE} FROM {db}.messages WHERE {_org(org)} AND group_id = '{quote(group)}' "
            f"AND ts {op} {int(ts)} ORDER BY ts {order} LIMIT {int(limit)}")


def console_group_exists(db: str, org: str, group: str) -> str:
    return (f"SELECT count() FROM {db}.raw_events WHERE {_org(org)} AND group_id = '{quote(group)}'")


def console_group_name(db: str, org: str, group: str) -> str:
    return (f"SELECT argMax(visitParamExtractString(payload, 'name'), ts) FROM {db}.raw_events "
            f"WHERE {_org(org)} AND kind = 'group' AND group_id = '{quote(group)}'")


def console_members(db: str, org: str, group: str) -> str:
    """(user_id, present, nickname, name, departed, nickname_bad, external) as each member stands now."""
    return (f"SELECT user_id, now_present, now_nickname, now_name, now_departed, now_nickname_bad, now_external "
            f"FROM ({_current_memberships(db, org, group)}) ORDER BY now_present DESC, user_id")


def console_group_rules(db: str, org: str, group: str) -> str:
    """(rule, findings that stand, open) in one group."""
    return (f"SELECT rule, countIf(status != 'false_positive'), countIf(status IN ('open', 'appealed')) "
            f"FROM ({_org_findings(db, org, _eq('group_id', group))}) GROUP BY rule ORDER BY rule")


def console_recent(db: str, org: str, column: str, value: str, limit: int = 50) -> str:
    """(finding_id, rule, severity, group_id, user_id, ts, status) latest first, of one group or member."""
    assert column in ("group_id", "user_id")
    return (f"SELECT finding_id, rule, severity, group_id, user_id, ts, status "
            f"FROM ({_org_findings(db, org, _eq(column, value))}) ORDER BY ts DESC LIMIT {int(limit)}")


def console_answer_rates(db: str, org: str, group: str) -> str:
    """(notice_id, ts, answers asked for, answered in time, answered late, text) of a group's notices."""
    return (f"SELECT n.notice_id, n.ts, n.responders, r.in_time, r.late_ones, n.text FROM "
            f"(SELECT notice_id, any(ts) AS ts, any(responders) AS responders, any(text) AS text "
            f"FROM {db}.notices WHERE {_org(org)} AND group_id = '{quote(group)}' GROUP BY notice_id) AS n "
            f"LEFT JOIN (SELECT notice_id, uniqExactIf(user_id, late = 0) AS in_time, "
            f"uniqExactIf(user_id, late = 1) AS late_ones FROM {db}.responses WHERE {_org(org)} "
            f"AND group_id = '{quote(group)}' GROUP BY notice_id) AS r USING (notice_id) ORDER BY n.ts DESC")


def console_member_groups(db: str, org: str, user: str) -> str:
    """(group_id, present, nickname, name, departed, nickname_bad, external) of one person, per group."""
    return (f"SELECT group_id, now_present, now_nickname, now_name, now_departed, now_nickname_bad, now_external "
            f"FROM ({_current_memberships(db, org, None)}) WHERE user_id = '{quote(user)}' ORDER BY group_id")


def console_member_exists(db: str, org: str, user: str) -> str:
    return f"SELECT count() FROM {db}.raw_events WHERE {_org(org)} AND user_id = '{quote(user)}'"


def console_member_strikes(db: str, org: str, user: str) -> str:
    """(group_id, findings that stand, sanctions, the latest sanction) of one person, per group."""
    return (f"SELECT group_id, countIf(rule NOT LIKE 'sanction.%' AND status != 'false_positive'), "
            f"countIf(rule LIKE 'sanction.%' AND status != 'false_positive'), "
            f"argMaxIf(rule, ts, rule LIKE 'sanction.%' AND status != 'false_positive') "
            f"FROM ({_org_findings(db, org, _eq('user_id', user))}) GROUP BY group_id ORDER BY group_id")


def console_deadletters(db: str, org: str, since_s: int) -> str:
    """(reason, dead letters) received since `since_s` (unix s) whose record names the org; the reason
    '' counts those that name no org (unparseable records): their reasons may quote another org's."""
    return (f"SELECT if(o = '', '', error) AS reason, count() FROM (SELECT error, "
            f"visitParamExtractString(raw, 'org_id') AS o FROM {db}.deadletter "
            f"WHERE received_at >= toDateTime({int(since_s)})) WHERE o IN ('', '{quote(org)}') "
            "GROUP BY reason ORDER BY count() DESC LIMIT 10")


# --- retention (pipeline/retention.py) -------------------------------------------------------

def partitions(db: str, table: str) -> str:
    """A table's active partitions (toYYYYMM months) and their rows."""
    return (f"SELECT partition, sum(rows) FROM system.parts WHERE database = '{quote(db)}' "
            f"AND table = '{quote(table)}' AND active GROUP BY partition ORDER BY partition")


def drop_partition(db: str, table: str, partition: str) -> str:
    return f"ALTER TABLE {db}.{table} DROP PARTITION {int(partition)}"


def set_ttl(db: str, table: str, column: str, days: int) -> str:
    return f"ALTER TABLE {db}.{table} MODIFY TTL {column} + INTERVAL {int(days)} DAY"


def remove_ttl(db: str, table: str) -> str:
    return f"ALTER TABLE {db}.{table} REMOVE TTL"


def table_definition(db: str, table: str) -> str:
    return (f"SELECT create_table_query FROM system.tables WHERE database = '{quote(db)}' "
            f"AND name = '{quote(table)}'")


# --- per-org readers (pipeline/isolation.py) --------------------------------------------------

def org_databases(db: str) -> str:
    return f"SELECT name FROM system.databases WHERE startsWith(name, '{quote(db)}_org_') ORDER BY name"


def tables_in(db: str) -> str:
    return f"SELECT name FROM system.tables WHERE database = '{quote(db)}'"


def org_tables(db: str) -> str:
    """(table, engine, its CREATE statement) of every table and view with an org_id column."""
    return (f"SELECT name, engine, create_table_query FROM system.tables WHERE database = '{quote(db)}' "
            f"AND engine != 'MaterializedView' AND name IN (SELECT table FROM system.columns "
            f"WHERE database = '{quote(db)}' AND name = 'org_id') ORDER BY name")


def stored_columns(db: str, table: str) -> str:
    return (f"SELECT name FROM system.columns WHERE database = '{quote(db)}' AND table = '{quote(table)}' "
            f"AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')")


def org_feed(db: str, odb: str, table: str, feed: str, org: str, columns: Sequence[str]) -> str:
    """Named columns, not *: a column a later migration adds to the main table is left out of the
    org's copy instead of failing every insert into the main table."""
    return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{feed} TO {odb}.{table} "
            f"AS SELECT {', '.join(columns)} FROM {db}.{table} WHERE {_org(org)}")


def org_backfill(db: str, odb: str, table: str, org: str, columns: Sequence[str]) -> str:
    cols = ", ".join(columns)
    return f"INSERT INTO {odb}.{table} ({cols}) SELECT {cols} FROM {db}.{table} WHERE {_org(org)}"


def optimize_final(db: str, table: str) -> str:
    return f"OPTIMIZE TABLE {db}.{table} FINAL"
