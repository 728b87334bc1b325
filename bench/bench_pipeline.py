"""End-to-end throughput of one qunguard worker, beside the two ceilings it cannot beat.

In one run, on the same simulated data (batch envelopes of --envelope events, the way archive
pulls deliver them), on the embedded Tansu broker and chDB:
  1. bare Faust: an agent that only decodes the records (Faust's own per-record cost);
  2. bare jieba: `jieba.lcut` over every message text of the data, in this process;
  3. the pipeline: `qunguard worker` (decode, validate, tokenize, detect, write to ClickHouse,
     commit), its rate taken from its own log between its first and last stored batch.
Each is expressed in events per second of the same data. Last line: ratio=R, R = pipeline / the
lower of the two ceilings. This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import jieba
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import config_env, load_config  # noqa: E402
from pipeline.devtools.devservices import start_clickhouse, start_tansu  # noqa: E402
from pipeline.devtools.produce import produce, wait_drained  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402

# the delivery path's log line of each write (pipeline/delivery/path.py)
STORED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*stored: records=\d+ rows=\d+ events=(\d+)")


def _stamps(log: Path) -> list[tuple[float, int]]:
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        m = STORED.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append((t, int(m.group(2))))
    while stamps and stamps[-1][1] == 0:
        stamps.pop()  # writes after the last event's: forwarded facts the wait did not cover
    return stamps


def pipeline_rate(logs: list[Path]) -> tuple[float, int]:
    """Events stored per second, from the workers' own logs: each write names the producers'
    events it stored (records would be wrong: envelopes hold 1 to --envelope events, and the
    worker's own forwarded facts are records too). From the end of the first write to the end of
    the last (start-up and the broker's group delay are outside the window); with several
    workers, from the earliest first write to the latest last, each one's first write left out."""
    runs = [_stamps(log) for log in logs]
    if any(len(r) < 3 for r in runs):
        raise SystemExit(f"too few stored batches in {logs} to measure; use more --events")
    stored = sum(n for r in runs for _, n in r[1:])
    seconds = max(r[-1][0] for r in runs) - min(r[0][0] for r in runs)
    return stored / seconds, sum(len(r) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--envelope", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--tokenizer", choices=("jieba", "jieba_fast"), default="jieba",
                    help="the worker's tokenizer.backend (the reference stays bare jieba.lcut)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (more than one needs --server)")
    ap.add_argument("--server", action="store_true",
                    help="store into a ClickHouse server started here (Debian's) instead of chDB, which "
                         "one process holds")
    args = ap.parse_args()
    if args.workers > 1 and not args.server:
        raise SystemExit("--workers above 1 needs --server: chDB's directory belongs to one process")

    sim = Simulator(orgs=4, groups=400, members=15, seed=args.seed)
    records = list(sim.records(args.events, envelope=args.envelope))
    events = sum(len(r.valid_ids) for r in records)
    decoded = (orjson.loads(r.value) for r in records)
    texts = [e["text"] for d in decoded for e in (d if isinstance(d, list) else [d]) if e.get("kind") == "message"]
    print(f"data: {events:,} events in {len(records):,} records (envelopes of {args.envelope}), "
          f"{len(texts):,} message texts, {len(set(texts)) / len(texts):.0%} distinct")

    # 2. bare jieba on the same texts
    jieba.initialize()
    t = time.perf_counter()
    for text in texts:
        jieba.lcut(text)
    jieba_s = time.perf_counter() - t
    jieba_rate = events / jieba_s
    print(f"bare jieba.lcut: {len(texts) / jieba_s:,.0f} texts/s = {jieba_rate:,.0f} events/s of this data")

    home = Path(tempfile.mkdtemp(prefix="qg-bench-"))
    tansu = start_tansu(home / "tansu")
    server = start_clickhouse(home / "clickhouse") if args.server else None
    try:
        store = server.url if server else f"chdb:{home / 'chdb'}"
        cfg = load_config(env={"QG_KAFKA_URL": tansu.url, "QG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
                               "QG_CLICKHOUSE_URL": store, "QG_WORKER_LOG_LEVEL": "info",
                               "QG_WORKER_APP_ID": "qg-bench", "QG_WORKER_DATA_DIR": str(home / "worker"),
                               "QG_TOKENIZER_BACKEND": args.tokenizer})
        ensure_topics(cfg)
        ends = produce(cfg, records, show_progress=False)

        # 1. bare Faust, decode only
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "faust_decode.py"), tansu.url,
                              cfg.topic("events"), str(len(records)), "qg-bench-bare"],
                             capture_output=True, text=True, timeout=300)
        m = re.search(r"events=(\d+) seconds=([\d.]+)", out.stdout + out.stderr)
        if not m:
            raise SystemExit(f"bare Faust run failed:\n{out.stdout}\n{out.stderr[-2000:]}")
        faust_rate = int(m.group(1)) / float(m.group(2))
        print(f"bare Faust decode: {len(records) / float(m.group(2)):,.0f} records/s = {faust_rate:,.0f} events/s")

        # 3. the pipeline
        logs = [home / f"worker{i}.log" for i in range(args.workers)]
        env = {**config_env(cfg), "QG_WORKER_METRICS_LISTEN": ""}  # one port would refuse the second worker
        workers = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], env=env, cwd=ROOT,
                                    stdout=open(log, "wb"), stderr=subprocess.STDOUT) for log in logs]
        try:
            if not wait_drained(cfg, ends, timeout=900, alive=lambda: all(w.poll() is None for w in workers)):
                tails = "\n".join(log.read_text()[-2000:] for log in logs)
                raise SystemExit(f"workers did not finish:\n{tails}")
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(60)
        rate, batches = pipeline_rate(logs)
        where = "a ClickHouse server" if server else "chDB"
        print(f"pipeline ({args.workers} worker{'s' if args.workers > 1 else ''}, to {where}, {args.tokenizer}): "
              f"{rate:,.0f} events/s ({batches} stored batches)")
    finally:
        tansu.stop()
        if server:
            server.stop()
    ceiling = min(faust_rate, jieba_rate)
    print(f"ratio={rate / ceiling:.2f}")


if __name__ == "__main__":
    main()
