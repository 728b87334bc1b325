"""`qunguard org-reader --org O`: a ClickHouse user that reads one organisation's rows and nothing else.

Each org gets a database of its own, `{db}_org_{O}`, holding a copy of every table with an
`org_id` column, kept current by a materialized view in the main database (`feed_{O}_{table}`,
`TO` the org's table, `WHERE org_id = O`): each insert the sink makes is split as it lands. The
reader may use only its org's database (`allow_databases` on ClickHouse 18.16, `GRANT SELECT ON
{db}_org_{O}.*` on current servers), so a row of another org is not hidden from it by a filter,
it is not there at all. Measured on 18.16: a view in the org's database over the main tables is
refused to such a user (the server checks the view's source database too), and users.xml's row
`filter` is not read by 18.16, hence the copy. It costs the org's rows twice on disk; row
policies (ClickHouse 20.5+) would not, and are the step after this one where every server has them.

Existing rows are copied once after the feed exists (so nothing inserted meanwhile is lost; a
row copied twice is one row after ReplacingMergeTree's merge, which `OPTIMIZE … FINAL` starts).
Running it again for the same org adds what a later migration added and changes nothing else.
Tables without `org_id` (deadletter: malformed input names no org) are not shared with any org.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from pipeline.sink import queries
from pipeline.sink.backends import Backend
from pipeline.sink.migrate import migration_files, render

SQL_USERS_SINCE = (20, 5)  # CREATE USER / GRANT; before that, users live in users.xml (users.d)


@dataclass
class OrgReader:
    org: str
    database: str
    user: str
    tables: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    users_xml: str | None = None  # for servers without SQL users: put it in users.d


def safe_name(org: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", org):
        raise ValueError(f"org {org!r}: letters, digits, '_' and '-' only (it names a database and a user)")
    return org.replace("-", "_")


def org_database(db: str, org: str) -> str:
    return f"{db}_org_{safe_name(org)}"


def provision(backend: Backend, org: str, password: str, dry_run: bool = False) -> OrgReader:
    db = backend.database
    odb = org_database(db, org)
    name = safe_name(org)
    out = OrgReader(org, odb, f"qg_org_{name}")
    existing = {r[0] for r in backend.query(queries.tables_in(odb))}
    sql = [queries.create_database(odb)]
    views = []
    for table, engine, create in backend.query(queries.org_tables(db)):
        if engine == "View":
            views.append(table)
            continue
        out.tables.append(table)
        if table in existing:
            continue
        sql.append(re.sub(rf"^CREATE TABLE (IF NOT EXISTS )?{re.escape(db)}\.", f"CREATE TABLE IF NOT EXISTS {odb}.",
                          create))
        columns = [r[0] for r in backend.query(queries.stored_columns(db, table))]
        sql.append(queries.org_feed(db, odb, table, f"feed_{name}_{table}", org, columns))
        sql.append(queries.org_backfill(db, odb, table, org, columns))
        sql.append(queries.optimize_final(odb, table))
    version = backend.version()
    for _, _, text in migration_files():  # the views (findings_current), over the org's own tables
        made = re.search(r"CREATE VIEW IF NOT EXISTS \{db\}\.(\w+)", text)
        if made and made.group(1) in views and made.group(1) not in existing:
            sql.append(render(text, odb, version))
    if version >= SQL_USERS_SINCE:
        digest = hashlib.sha256(password.encode()).hexdigest()
        sql += [f"CREATE USER IF NOT EXISTS {out.user} IDENTIFIED WITH sha256_hash BY '{digest}' "
                f"DEFAULT DATABASE {odb}", f"GRANT SELECT ON {odb}.* TO {out.user}"]
    else:
        out.users_xml = users_xml(out.user, password, odb)
    out.statements = sql
    if not dry_run:
        for statement in sql:
            backend.execute(statement)
    return out


def users_xml(user: str, password: str, database: str) -> str:
    """The users.d file of a reader on servers without SQL users (ClickHouse 18.16): read-only,
    its org's database only."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"""<?xml version="1.0"?>
<!-- qunguard org-reader: {user} reads {database} and nothing else. -->
<yandex>
    <users>
        <{user}>
            <password_sha256_hex>{digest}</password_sha256_hex>
            <networks><ip>::/0</ip></networks>
            <profile>readonly</profile>
            <quota>default</quota>
            <allow_databases><database>{database}</database></allow_databases>
        </{user}>
    </users>
</yandex>
"""
