"""`qunguard retention`: old rows leave ClickHouse, table by table (config section `retention`).

Every table that grows with traffic is partitioned by month (`toYYYYMM` of its time column,
schemas/migrations/). A month is dropped whole once its last day is older than the table's
retention, a metadata operation on every server version, ClickHouse 18.16 included. Where the
server has table TTL (19.6 and later, chDB), the command also sets `TTL column + INTERVAL d DAY`,
so that the server removes rows day by day in its merges, between runs of this command. Run it
daily (cron, a systemd timer, a compose one-shot); a second run the same day changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pipeline.config import RetentionConfig
from pipeline.sink import queries
from pipeline.sink.backends import Backend

# table → (its time column, the retention setting that covers it)
TABLES: dict[str, tuple[str, str]] = {
    "raw_events": ("dt", "events_days"), "messages": ("dt", "events_days"),
    "deadletter": ("received_at", "deadletter_days"),
    "notices": ("dt", "deadline_days"), "responses": ("dt", "deadline_days"),
    "alerts": ("dt", "alerts_days"), "alert_deliveries": ("dt", "alerts_days"),
    "findings": ("dt", "findings_days"), "sanction_actions": ("dt", "findings_days"),
}
TTL_SINCE = (19, 6)


@dataclass(frozen=True)
class Drop:
    database: str
    table: str
    partition: str  # YYYYMM
    rows: int


def _after_month(partition: str) -> date:
    """The first day after the month YYYYMM."""
    year, month = int(partition[:4]), int(partition[4:6])
    return date(year + month // 12, month % 12 + 1, 1)


def databases(backend: Backend) -> list[str]:
    """The main database and the org readers' copies (pipeline/isolation.py), which age alike."""
    return [backend.database] + [r[0] for r in backend.query(queries.org_databases(backend.database))]


def plan(backend: Backend, cfg: RetentionConfig, today: date) -> list[Drop]:
    """The partitions whose every row is past its table's retention on `today` (UTC): a month is
    kept until the day after it ends is more than `days` ago, one day more for the server's time
    zone, in which `toYYYYMM` cut the months."""
    out = []
    for db in databases(backend):
        for table, (_, setting) in TABLES.items():
            days = getattr(cfg, setting)
            if not days:
                continue
            cutoff = today - timedelta(days=days + 1)
            for partition, rows in backend.query(queries.partitions(db, table)):
                if str(partition).isdigit() and len(str(partition)) == 6 and _after_month(str(partition)) <= cutoff:
                    out.append(Drop(db, table, str(partition), int(rows)))
    return out


def apply(backend: Backend, cfg: RetentionConfig, today: date | None = None, dry_run: bool = False
          ) -> tuple[list[Drop], list[str]]:
    """Drop what `plan` finds; set (or remove, for 0) each table's TTL where the server has TTL.
    Returns the drops and the TTL statements run."""
    today = today or datetime.now(UTC).date()
    drops = plan(backend, cfg, today)
    ttls: list[str] = []
    if backend.version() >= TTL_SINCE:
        for db in databases(backend):
            present = {r[0] for r in backend.query(queries.tables_in(db))}
            for table, (column, setting) in TABLES.items():
                days = getattr(cfg, setting)
                if table not in present:
                    continue
                if days:
                    ttls.append(queries.set_ttl(db, table, column, days))
                elif " TTL " in str(backend.query(queries.table_definition(db, table))[0][0]):
                    ttls.append(queries.remove_ttl(db, table))  # kept for ever now
    if dry_run:
        return drops, ttls
    for d in drops:
        backend.execute(queries.drop_partition(d.database, d.table, d.partition))
    for sql in ttls:
        backend.execute(sql)
    return drops, ttls
