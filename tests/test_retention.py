"""`qunguard retention` on both server kinds: months past a table's retention leave, the rest and
the tables kept for ever stay; TTL is set where the server has it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

import orjson
import pytest

from pipeline.config import RetentionConfig
from pipeline.retention import apply
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import ROOT, make_config, server_url, unique
from tests.stored import store

TODAY = date(2026, 12, 1)
MONTHS = (date(2026, 1, 15), date(2026, 5, 20), date(2026, 11, 3))


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, 12, tzinfo=UTC).timestamp() * 1000)


def _events() -> list[bytes]:
    out = []
    for i, d in enumerate(MONTHS):
        for j in range(3):
            out.append(orjson.dumps({
                "kind": "message", "event_id": f"e{i}{j}", "org_id": "o1", "ts": _ms(d) + j, "platform": "wecom",
                "group_id": "g1", "msg_id": f"m{i}{j}", "sender_id": "u1", "text": "澳门首家线上赌场上线啦"}))
    return out


def _months(backend, table: str) -> dict[str, int]:
    return {str(p): int(n) for p, n in backend.query(
        f"SELECT toYYYYMM(dt), count() FROM {backend.database}.{table} GROUP BY toYYYYMM(dt)")}


def _check(backend) -> list[str]:
    before = _months(backend, "messages")
    assert set(before) == {"202601", "202605", "202611"}
    findings = _months(backend, "findings")
    assert sum(findings.values()) >= 3
    cfg = RetentionConfig(events_days=180)
    planned, _ = apply(backend, cfg, TODAY, dry_run=True)
    assert _months(backend, "messages") == before  # a dry run changes nothing
    drops, ttls = apply(backend, cfg, TODAY)
    assert drops == planned
    old = {(t, m) for t in ("raw_events", "messages") for m in ("202601", "202605")}
    assert {(d.table, d.partition) for d in drops if d.database == backend.database} == old
    assert _months(backend, "messages") == {"202611": 3} and _months(backend, "raw_events") == {"202611": 3}
    assert _months(backend, "findings") == findings  # kept for ever by default
    assert apply(backend, cfg, TODAY)[0] == []  # the next run: nothing more
    return ttls


@pytest.mark.parametrize("kind", ["server", "chdb"])
def test_retention_drops_old_months_and_keeps_the_rest(tmp_path, clickhouse, kind):
    url = server_url(clickhouse, unique("ret")) if kind == "server" else f"chdb:{tmp_path / 'chdb'}"
    cfg = make_config(tmp_path, clickhouse_url=url)
    backend = connect(url)
    try:
        migrate(backend)
        store(cfg, backend, _events(), until=_ms(TODAY))
        if kind == "server":  # an org reader's copy (pipeline/isolation.py) ages with the main tables
            from pipeline.isolation import provision
            copy = provision(backend, "o1", "pw").database
        ttls = _check(backend)
        if kind == "server":
            assert {str(p) for (p,) in backend.query(f"SELECT DISTINCT toYYYYMM(dt) FROM {copy}.messages")} \
                == {"202611"}
        if backend.version() >= (19, 6):  # chDB: the server removes rows in its merges between runs
            assert any("raw_events MODIFY TTL dt + INTERVAL 180 DAY" in t for t in ttls)
            create = backend.query(f"SHOW CREATE TABLE {backend.database}.messages")[0][0]
            assert "TTL" in create and "180" in create
            assert "TTL" not in backend.query(f"SHOW CREATE TABLE {backend.database}.findings")[0][0]
        else:  # Debian's 18.16 has no TTL: whole months only
            assert ttls == []
    finally:
        backend.close()


def test_the_command_says_what_it_would_drop(tmp_path):
    url = f"chdb:{tmp_path / 'chdb'}"
    cfg = make_config(tmp_path, clickhouse_url=url)
    backend = connect(url)
    migrate(backend)
    store(cfg, backend, _events(), until=_ms(TODAY))
    backend.close()
    env = {"QG_CLICKHOUSE_URL": url, "QG_RETENTION_EVENTS_DAYS": "30", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "retention", "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "would drop qunguard.messages month 202601: 3 rows" in r.stdout
    assert "202611" not in r.stdout or datetime.now(UTC).date() >= date(2027, 1, 3)
    bad = subprocess.run([sys.executable, "-m", "pipeline.cli", "retention"], cwd=ROOT,
                         env=env | {"QG_RETENTION_EVENTS_DAYS": "-1"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("qunguard: config: retention.events_days"), bad.stderr
