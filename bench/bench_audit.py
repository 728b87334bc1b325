"""The membership audit and the governance detectors, with --groups simulated groups (1,000).

In one run, on the same simulated org (rosters, groups, joins, departures, outsiders, nicknames,
and the chatter around them), stored in chDB (or the ClickHouse server of --clickhouse):
  - the governance detectors (group stage and member stage, replay's way) beside bare
    `jieba.lcut` over the same events' texts: what governance adds to what every message pays;
  - `qunguard audit members` (two aggregate queries over `memberships`) beside the naive way: every
    membership row into Python and the current standing worked out there.
Last line: ratio=R, R = naive audit seconds ÷ audit seconds. A benchmark: it prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jieba  # noqa: E402
import orjson  # noqa: E402

from pipeline.audit import audit_members  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.detectors.governance.group import GroupDetector  # noqa: E402
from pipeline.detectors.governance.member import MemberDetector  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.policy import Policy  # noqa: E402
from pipeline.processor import Processor  # noqa: E402
from pipeline.sink.backends import connect  # noqa: E402
from pipeline.sink.migrate import migrate  # noqa: E402
from pipeline.sink.writer import ClickHouseSink  # noqa: E402
from schemas.records import validate_event  # noqa: E402
from schemas.rows import Source  # noqa: E402


def best(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def naive(backend) -> int:
    """Every row to Python; the latest version per (group, person) kept; problems counted there."""
    rows = backend.query(f"SELECT org_id, group_id, user_id, seq, present, nickname_bad, departed, external "
                         f"FROM {backend.database}.memberships")
    latest: dict[tuple, tuple] = {}
    for org, group, user, seq, *flags in rows:
        key = (org, group, user)
        if key not in latest or int(seq) > int(latest[key][0]):
            latest[key] = (seq, *flags)
    return sum(int(d) + int(n) + int(x) for _, present, n, d, x in latest.values() if int(present))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--groups", type=int, default=1000)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--clickhouse", help="a clickhouse:// URL (default: chDB in a temporary directory)")
    args = ap.parse_args()
    url = args.clickhouse or f"chdb:{tempfile.mkdtemp(prefix='qg-bench-audit-')}"
    sim = Simulator(orgs=2, groups=args.groups, members=12, seed=9)
    records = list(sim.records(args.events))
    events = [validate_event(orjson.loads(r.value)) for r in records]
    texts = [e["text"] for e in events if e["kind"] == "message" and e["text"]]

    jieba.lcut("预热")
    began = time.perf_counter()
    for t in texts:
        jieba.lcut(t)
    jieba_s = time.perf_counter() - began
    engine = Engine(Policy(), detectors=[GroupDetector(), MemberDetector()], loopback=True)
    began = time.perf_counter()
    found = sum(len(engine.process(e, []).findings) for e in events)
    found += len(engine.tick(events[-1]["ts"]).findings)
    gov_s = time.perf_counter() - began
    print(f"events={len(events)} groups={args.groups} people={len(engine.stores['member'])} findings={found}")
    print(f"bare jieba.lcut over the {len(texts)} texts: {len(events) / jieba_s:,.0f} events/s of this data")
    print(f"governance detectors (both stages): {len(events) / gov_s:,.0f} events/s")

    backend = connect(url)
    migrate(backend)
    cfg = load_config(env={"QG_CLICKHOUSE_URL": url})
    sink = ClickHouseSink(backend, cfg.sink)
    processor = Processor(cfg, Engine(Policy(), loopback=True))
    for i in range(0, len(records), 2000):
        sink.admit(processor.process((r.value, Source("b", 0, i + j)) for j, r in enumerate(records[i:i + 2000])))
    sink.admit(processor.tick(None, events[-1]["ts"]))
    sink.flush()
    audits = audit_members(backend)
    problems = sum(a.problems for a in audits)
    assert naive(backend) == problems, "the two ways must agree before they are timed"
    audit_s = best(lambda: audit_members(backend))
    naive_s = best(lambda: naive(backend))
    rows = backend.query(f"SELECT count() FROM {backend.database}.memberships")[0][0]
    backend.close()
    print(f"memberships rows={rows}, groups audited={len(audits)}, problems={problems}")
    print(f"audit members: {audit_s * 1000:.0f} ms; naive (all rows to Python): {naive_s * 1000:.0f} ms")
    print(f"ratio={naive_s / audit_s:.2f}")


if __name__ == "__main__":
    main()
