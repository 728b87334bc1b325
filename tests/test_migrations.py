import re

from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate, migration_files, render
from schemas.rows import TABLES
from tests.conftest import server_url, unique


def _check_schema(backend):
    assert migrate(backend) == [name for _, name, _ in migration_files()]
    assert migrate(backend) == []  # idempotent
    db = backend.database
    for table, columns in TABLES.items():
        stored = [r[0] for r in backend.query(f"DESCRIBE TABLE {db}.{table}")]
        # One definition: every column the sink writes exists, in the DDL, under the same name.
        assert set(columns) <= set(stored), (table, set(columns) - set(stored))


def test_migrations_on_clickhouse_18_16(clickhouse):
    backend = connect(server_url(clickhouse, unique("mig")))
    assert backend.version()[:2] == (18, 16)
    _check_schema(backend)
    ddl = backend.query(f"SHOW CREATE TABLE {backend.database}.messages")[0][0]
    assert "LowCardinality" not in ddl and "CODEC" not in ddl


def test_migrations_on_chdb(tmp_path):
    backend = connect(f"chdb:{tmp_path / 'db'}")
    _check_schema(backend)
    ddl = backend.query(f"SHOW CREATE TABLE {backend.database}.messages")[0][0]
    assert "LowCardinality(String)" in ddl and "CODEC(ZSTD(3))" in ddl
    backend.close()


def test_render_markers():
    sql = "a $LC(String), b String $CODEC(ZSTD(3)), c $LC(String)"
    assert render(sql, "d", (18, 16, 1)) == "a String, b String , c String"
    assert render(sql, "d", (24, 3)) == "a LowCardinality(String), b String CODEC(ZSTD(3)), c LowCardinality(String)"
    assert all(re.match(r"\d{4}_", name) for _, name, _ in migration_files())
