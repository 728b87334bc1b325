"""A user of org A reading ClickHouse with org A's credentials sees 0 rows of org B, on Debian's
ClickHouse 18.16 (no row policies, no SQL users): `qunguard org-reader`, then traffic of both
orgs through the sink, read as that user."""

from __future__ import annotations

import subprocess
import sys

import pytest
from clickhouse_driver import Client

from pipeline.devtools.simulate import Simulator
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from tests.conftest import ROOT, make_config, server_url, unique, wait_for
from tests.stored import store


def _records(n: int, seed: int) -> list[bytes]:
    return [r.value for r in Simulator(orgs=2, groups=8, members=8, seed=seed).records(n, envelope=20)]


def test_an_org_reader_sees_its_org_and_nothing_else(tmp_path, clickhouse):
    url = server_url(clickhouse, unique("iso"))
    cfg = make_config(tmp_path, clickhouse_url=url)
    backend = connect(url)
    db = backend.database
    migrate(backend)
    store(cfg, backend, _records(3000, 4), until=1_900_000_000_000)  # before the reader exists
    users_d = clickhouse.root / "users.d"
    users_d.mkdir(exist_ok=True)
    env = {"QG_CLICKHOUSE_URL": url, "QUNGUARD_ORG_READER_PASSWORD": "org1-secret", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "org-reader", "--org", "org1", "--users-d", str(users_d)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "qg_org_org1 reads" in r.stdout and " 0 tables" not in r.stdout, r.stdout
    assert "org1-secret" not in r.stdout and "org1-secret" not in (users_d / "qg_org_org1.xml").read_text()
    store(cfg, backend, _records(3000, 5), until=1_900_000_000_000)  # and after: the feed splits it
    host, port = url.split("@")[1].split("/")[0].split(":")
    reader = Client(host=host, port=int(port), user="qg_org_org1", password="org1-secret",
                    database=f"{db}_org_org1", settings={"readonly": 1})

    def can_log_in() -> bool:
        try:
            return reader.execute("SELECT 1") == [(1,)]
        except Exception:  # noqa: BLE001 -- the server reads users.d every few seconds
            return False

    wait_for(can_log_in, 30, "the server to read the new user")
    odb = f"{db}_org_org1"
    tables = [t for (t,) in reader.execute(f"SHOW TABLES FROM {odb}")]
    assert {"raw_events", "messages", "findings", "memberships", "findings_current"} <= set(tables)
    for table in tables:  # not one row of org2 anywhere the reader can look
        got = reader.execute(f"SELECT countIf(org_id != 'org1') FROM {odb}.{table}")[0][0]
        assert got == 0, f"{table}: {got} rows of another org"
    for table in ("raw_events", "messages", "findings", "memberships", "finding_status"):
        mine, theirs = backend.query(f"SELECT countIf(org_id = 'org1'), countIf(org_id != 'org1') "
                                     f"FROM {db}.{table} FINAL")[0]
        assert mine > 0 and theirs > 0, f"{table}: both orgs are in the main table"
        # every row of org1, stored before the reader was made and after, and each once
        assert reader.execute(f"SELECT count() FROM {odb}.{table} FINAL")[0][0] == mine, table
    assert reader.execute("SELECT count() FROM findings_current")[0][0] == \
        backend.query(f"SELECT count() FROM {db}.findings_current WHERE org_id = 'org1'")[0][0]
    for sql in (f"SELECT count() FROM {db}.findings", f"SELECT count() FROM {db}.deadletter",
                f"INSERT INTO {odb}.findings (finding_id) VALUES ('x')"):
        with pytest.raises(Exception) as refused:
            reader.execute(sql)
        assert "291" in str(refused.value) or "164" in str(refused.value) or "readonly" in str(refused.value)
    # again for the same org: nothing copied twice, nothing broken
    before = reader.execute(f"SELECT count() FROM {odb}.messages")[0][0]
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "org-reader", "--org", "org1"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert reader.execute(f"SELECT count() FROM {odb}.messages")[0][0] == before
    reader.disconnect()
    backend.close()


def test_an_org_id_that_cannot_name_a_database_is_refused():
    from pipeline.isolation import safe_name

    assert safe_name("acme-bank_01") == "acme_bank_01"
    for bad in ("org1'; DROP TABLE x", "", "组织"):
        with pytest.raises(ValueError, match="letters, digits"):
            safe_name(bad)
