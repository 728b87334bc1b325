"""The SQL the sink and the migrations send, in one place (the dashboards' and the audit's
queries live beside their readers: pipeline/audit.py, deploy/grafana)."""

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
