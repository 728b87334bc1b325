"""`qunguard audit members`: its counts per group against a query over what ClickHouse holds of the
raw input (member, roster and group events), computed independently of the detectors' state."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.audit import PROBLEMS, audit_members
from pipeline.cli import main
from pipeline.config import config_env
from pipeline.devtools.produce import produce, wait_drained
from pipeline.devtools.simulate import Simulator
from pipeline.engine import Engine
from pipeline.kafka import ensure_topics
from pipeline.policy import Policy
from pipeline.processor import Processor
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.sink.writer import ClickHouseSink
from schemas.rows import Source
from tests.conftest import Worker, make_config, server_url, unique, wait_for

ROOT = Path(__file__).resolve().parent.parent

# Who is in each group now (the last join, leave or kick), their roster entry, and who invited them;
# with the default policy: departed = roster says left, bad nickname = it does not contain the roster
# name, external = not on the roster and not invited by the owner (the simulator has no admins).
XCHECK = """
SELECT group_id, count(), sum(status = 'left'), sum(known = 1 AND position(nick, name) = 0),
       sum(known = 0 AND actor != owner)
FROM (
    SELECT * FROM (
        SELECT org_id, group_id, user_id,
               argMaxIf(visitParamExtractString(payload, 'action'), ts,
                        visitParamExtractString(payload, 'action') IN ('join', 'leave', 'kick')) AS last_action,
               argMaxIf(visitParamExtractString(payload, 'nickname'), ts,
                        visitParamExtractString(payload, 'nickname') != '') AS nick,
               argMaxIf(visitParamExtractString(payload, 'actor_id'), ts,
                        visitParamExtractString(payload, 'action') = 'join') AS actor
        FROM {db}.raw_events WHERE kind = 'member' GROUP BY org_id, group_id, user_id
    ) AS m
    ANY LEFT JOIN (
        SELECT org_id, user_id, argMax(visitParamExtractString(payload, 'status'), ts) AS status,
               argMax(visitParamExtractString(payload, 'name'), ts) AS name, 1 AS known
        FROM {db}.raw_events WHERE kind = 'roster' GROUP BY org_id, user_id
    ) AS r USING (org_id, user_id)
    WHERE last_action = 'join'
) AS mr
ANY LEFT JOIN (
    SELECT group_id, argMax(visitParamExtractString(payload, 'owner_id'), ts) AS owner
    FROM {db}.raw_events WHERE kind = 'group' GROUP BY group_id
) AS o USING (group_id)
GROUP BY group_id
"""


def from_raw_events(url: str) -> dict[str, tuple[int, ...]]:
    backend = connect(url)
    try:
        return {g: tuple(int(x) for x in rest) for g, *rest in backend.query(XCHECK.format(db=backend.database))}
    finally:
        backend.close()


def from_csv(text: str) -> dict[str, tuple[int, ...]]:
    """(members, departed, bad nicknames, external) per group, counted from the CSV's person rows."""
    out: dict[str, list[int]] = {}
    for r in csv.DictReader(io.StringIO(text)):
        row = out.setdefault(r["group_id"], [int(r["members"]), 0, 0, 0])
        if r["problem"]:
            assert r["user_id"], "a problem row names its person"
            row[1 + PROBLEMS.index(r["problem"])] += 1
    return {g: tuple(v) for g, v in out.items()}


def test_audit_on_chdb_matches_the_raw_events_and_filters_by_group(tmp_path, monkeypatch, capsys):
    url = f"chdb:{tmp_path / 'chdb'}"
    monkeypatch.setenv("QG_CLICKHOUSE_URL", url)
    from pipeline.config import load_config

    cfg = load_config(None)
    backend = connect(url)
    migrate(backend)
    sink = ClickHouseSink(backend, cfg.sink)
    processor = Processor(cfg, Engine(Policy(), loopback=True))  # replay's way: facts handed over here
    records = list(Simulator(orgs=2, groups=60, members=12, seed=5).records(15_000))
    for i in range(0, len(records), 1000):
        sink.admit(processor.process((r.value, Source("t", 0, i + j)) for j, r in enumerate(records[i:i + 1000])))
    sink.admit(processor.tick(None, int(time.time() * 1000)))
    sink.flush()
    audits = audit_members(backend)
    backend.close()
    totals = {p: sum(a.count(p) for a in audits) for p in PROBLEMS}
    assert all(totals.values()), f"the simulated org breaks every rule: {totals}"
    expected = from_raw_events(url)
    assert len(expected) == 60
    assert main(["audit", "members", "--csv", "-"]) == 0
    assert from_csv(capsys.readouterr().out) == expected
    bad = next(a for a in audits if a.problems)
    assert main(["audit", "members", "--group", bad.group_id, "--csv", str(tmp_path / "one.csv")]) == 0
    shown = capsys.readouterr().out
    assert from_csv((tmp_path / "one.csv").read_text(encoding="utf-8")) == {bad.group_id: expected[bad.group_id]}
    assert "1 groups audited, 1 with problems" in shown
    who = next(name for p in PROBLEMS for _, name in bad.people[p])
    assert who in (tmp_path / "one.csv").read_text(encoding="utf-8")


@pytest.mark.slow
def test_audit_of_1000_groups_through_kafka_matches_clickhouse(tmp_path, kafka, clickhouse, workers):
    """Acceptance: 1,000 simulated groups through a real worker (membership facts cross partitions
    through Kafka); the audit's counts per group equal the query over the raw events."""
    cfg = make_config(tmp_path, kafka.url, server_url(clickhouse, unique("audit")),
                      sink={"batch_rows": 5000, "batch_seconds": 0.5}, worker={"timer_seconds": 2})
    ensure_topics(cfg)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    backend.close()
    sim = Simulator(orgs=2, groups=1000, members=12, seed=61)
    ends = produce(cfg, sim.records(40_000, envelope=20), show_progress=False)
    workers.append(Worker(cfg, tmp_path / "worker.log"))
    assert wait_drained(cfg, ends, timeout=240, alive=lambda: workers[0].proc.poll() is None), \
        (tmp_path / "worker.log").read_text()[-3000:]
    expected = from_raw_events(cfg.clickhouse.url)
    assert len(expected) == 1000

    def audit() -> tuple[float, str]:
        began = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "audit", "members", "--csv", "-"],
                             env=config_env(cfg), cwd=ROOT, capture_output=True, text=True)
        # exit 2: no group has membership events yet (the member stage writes them at its timer)
        assert run.returncode in (0, 2), run.stderr[-2000:]
        return time.perf_counter() - began, run.stdout if run.returncode == 0 else ""

    # The member stage applies facts at the worker's timer: wait until it has caught up.
    wait_for(lambda: from_csv(audit()[1]) == expected, 90, "the audit to agree with the raw events", interval=2)
    seconds, out = audit()
    totals = [sum(v[i] for v in from_csv(out).values()) for i in (1, 2, 3)]
    print(f"\naudit members, 1000 groups: {seconds:.2f} s for the whole command (process start included); "
          f"departed {totals[0]}, nicknames {totals[1]}, external {totals[2]}")
    assert all(totals)
