"""Numbered SQL migrations from schemas/migrations, applied once each and recorded in the database.

The files use two markers so one DDL runs on ClickHouse 18.16 and on current servers:
`$LC(T)` becomes `LowCardinality(T)` where the server has it (19.x and later) and `T` otherwise;
`$CODEC(...)` becomes a column codec where the server has codecs (19.11 and later) and nothing otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import schemas
from pipeline.sink import queries
from pipeline.sink.backends import Backend

MIGRATIONS_DIR = Path(schemas.__file__).parent / "migrations"


def migration_files() -> list[tuple[int, str, str]]:
    out = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        number = int(path.name.split("_", 1)[0])
        out.append((number, path.stem, path.read_text(encoding="utf-8")))
    return out


def render(sql: str, database: str, version: tuple[int, ...]) -> str:
    has_lc = version >= (19, 0)
    has_codecs = version >= (19, 11)
    sql = re.sub(r"\$LC\((\w+)\)", (r"LowCardinality(\1)" if has_lc else r"\1"), sql)
    sql = re.sub(r"\$CODEC\(([^()]*(?:\([^()]*\))?)\)", (r"CODEC(\1)" if has_codecs else ""), sql)
    return sql.replace("{db}", database)


def migrate(backend: Backend) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied (idempotent)."""
    version = backend.version()
    db = backend.database
    backend.execute(queries.create_database(db))
    backend.execute(queries.ledger(db))
    done = {int(r[0]) for r in backend.query(queries.applied_migrations(db))}
    applied = []
    for number, name, sql in migration_files():
        if number in done:
            continue
        backend.execute(render(sql, db, version))
        backend.insert("schema_migrations", ("version", "name"), [(number, name)])
        applied.append(name)
    return applied
