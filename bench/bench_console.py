"""The console's pages with --findings findings (1,000,000) in a ClickHouse server.

In one run, on the same data: each page's server time (the Flask app's whole request: session,
queries, template) beside the bare SQL of that page (the same statements, sent straight to the
server, recorded while the page was built). The simulator's traffic gives the messages, members
and notices; the findings are that traffic's own findings, multiplied in ClickHouse with new ids
and times spread over --days days. Goal: every page under 300 ms. A benchmark: it prints, asserts
nothing. Last line: ratio=R, R = the slowest page's time ÷ its bare SQL time.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.console.app import create_app  # noqa: E402
from pipeline.console.users import Users  # noqa: E402
from pipeline.devtools import devservices  # noqa: E402
from pipeline.devtools.simulate import START_TS, Simulator  # noqa: E402
from pipeline.sink.backends import connect  # noqa: E402
from pipeline.sink.migrate import migrate  # noqa: E402
from tests.stored import store  # noqa: E402

DAY_MS = 86_400_000


class Recording:
    """A backend that remembers the statements it was sent."""

    def __init__(self, backend) -> None:
        self.backend, self.database, self.sql = backend, backend.database, []

    def query(self, sql: str):
        self.sql.append(sql)
        return self.backend.query(sql)


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--findings", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--clickhouse", help="clickhouse://… of a server (default: start Debian's here)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-console-"))
    server = None
    url = args.clickhouse
    if not url:
        server = devservices.start_clickhouse(tmp / "clickhouse")
        url = server.url.rsplit("/", 1)[0] + "/bench_console"
    backend = connect(url)
    try:
        migrate(backend)
        db = backend.database
        cfg = load_config(env={"QG_CLICKHOUSE_URL": url, "QG_KAFKA_TOPIC_PREFIX": "b."})
        store(cfg, backend, [r.value for r in Simulator(orgs=2, groups=60, members=12, seed=3).records(30_000)],
              START_TS + 14 * DAY_MS)
        seed = int(backend.query(f"SELECT count() FROM {db}.findings")[0][0])
        # The stored findings, copied with new ids and times over the days, until there are --findings.
        copies = max(1, args.findings // max(1, seed))
        began = time.perf_counter()
        backend.execute(
            f"INSERT INTO {db}.findings (finding_id, rule, severity, org_id, group_id, msg_id, user_id, ts, evidence, "
            f"policy_version, src_topic, src_partition, src_offset, src_index) "
            f"SELECT substring(hex(MD5(concat(finding_id, toString(n)))), 1, 24), rule, severity, org_id, group_id, "
            f"msg_id, user_id, ts - (n % {args.days}) * {DAY_MS} - n, evidence, policy_version, 'bench', 0, n, 0 "
            f"FROM {db}.findings ARRAY JOIN range({copies}) AS n WHERE n > 0")
        total = int(backend.query(f"SELECT count() FROM {db}.findings")[0][0])
        backend.execute(
            f"INSERT INTO {db}.finding_status (status_key, finding_id, org_id, group_id, user_id, rule, seq, ts, "
            f"status, verdict, actor_id, note, feedback_id, src_topic, src_partition, src_offset, src_index) "
            f"SELECT concat(finding_id, '/1'), finding_id, org_id, group_id, user_id, rule, 1, ts + 60000, "
            f"if(src_offset % 3 = 0, 'false_positive', 'confirmed'), "
            f"if(src_offset % 3 = 0, 'false_positive', 'confirmed'), 'bench', '', '', 'bench', 0, src_offset, 0 "
            f"FROM {db}.findings WHERE src_topic = 'bench' AND src_offset % 20 = 0")
        statuses = int(backend.query(f"SELECT count() FROM {db}.finding_status")[0][0])
        print(f"data: {total:,} findings ({statuses:,} verdicts) over {args.days} days, 2 orgs; "
              f"loaded in {time.perf_counter() - began:.1f} s; ClickHouse {'.'.join(map(str, backend.version()))}")
        users = Users(tmp / "users.json")
        users.put("bench", "org1", "reviewer", "bench-password")
        recording = Recording(backend)
        app = create_app(recording, users, lambda events: None)  # type: ignore[arg-type]
        client = app.test_client()
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"name": "bench", "password": "bench-password", "csrf": token})
        fid = backend.query(f"SELECT finding_id FROM {db}.findings WHERE org_id = 'org1' AND msg_id != '' "
                            "AND rule LIKE 'content.%' LIMIT 1")[0][0]
        group = backend.query(f"SELECT group_id FROM {db}.findings WHERE org_id = 'org1' GROUP BY group_id "
                              "ORDER BY count() DESC LIMIT 1")[0][0]
        worst = (0.0, 1.0, "")
        for name, url_ in (("overview (7 days)", "/"), ("overview (30 days)", f"/?days={args.days}"),
                           ("queue (7 days)", "/queue"), ("queue (30 days, one rule)", f"/queue?days={args.days}"
                                                                                      "&rule=content.ad"),
                           ("finding", f"/findings/{fid}"), ("group", f"/groups/{group}")):
            recording.sql.clear()
            assert client.get(url_).status_code == 200, url_
            statements = list(recording.sql)
            page = median_ms(lambda u=url_: client.get(u), args.runs)
            bare = median_ms(lambda s=statements: [backend.query(q) for q in s], args.runs)
            print(f"{name:28} page {page:7.1f} ms   its {len(statements)} queries bare {bare:7.1f} ms   "
                  f"page/bare {page / bare:4.2f}   {'under' if page < 300 else 'OVER'} 300 ms")
            if page > worst[0]:
                worst = (page, bare, name)
        print(f"slowest page: {worst[2]} {worst[0]:.0f} ms (goal < 300 ms); ratio={worst[0] / worst[1]:.2f}")
    finally:
        backend.close()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
