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
from pipeline.devtools.devservices import start_tansu  # noqa: E402
from pipeline.devtools.produce import produce, wait_drained  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402

# the delivery path's log line of each write (pipeline/delivery/path.py)
STORED = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\].*stored: records=\d+ rows=\d+ events=(\d+)")


def pipeline_rate(log: Path) -> tuple[float, int]:
    """Events stored per second, from the worker's own log: each write names the producers'
    events it stored (records would be wrong: envelopes hold 1 to --envelope events, and the
    worker's own forwarded facts are records too)."""
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        m = STORED.match(line)
        if m:
            t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append((t, int(m.group(2))))
    while stamps and stamps[-1][1] == 0:
        stamps.pop()  # writes after the last event's: forwarded facts the wait did not cover
    if len(stamps) < 3:
        raise SystemExit(f"too few stored batches in {log} to measure; use more --events")
    # From the end of the first batch to the end of the last: start-up and the broker's group
    # delay are outside the window.
    stored = sum(n for _, n in stamps[1:])
    seconds = stamps[-1][0] - stamps[0][0]
    return stored / seconds, len(stamps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--envelope", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--tokenizer", choices=("jieba", "jieba_fast"), default="jieba",
                    help="the worker's tokenizer.backend (the reference stays bare jieba.lcut)")
    args = ap.parse_args()

    sim = Simulator(orgs=4, groups=400, members=15, seed=args.seed)
    records = list(sim.records(args.events, envelope=args.envelope))
    events = sum(len(r.valid_ids) for r in records)
    texts = [e["text"] for r in records for e in orjson.loads(r.value) if e.get("kind") == "message"]
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
    try:
        cfg = load_config(env={"QG_KAFKA_URL": tansu.url, "QG_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
                               "QG_CLICKHOUSE_URL": f"chdb:{home / 'chdb'}", "QG_WORKER_LOG_LEVEL": "info",
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
        log = home / "worker.log"
        worker = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "worker"], env=config_env(cfg),
                                  cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        try:
            if not wait_drained(cfg, ends, timeout=900, alive=lambda: worker.poll() is None):
                raise SystemExit(f"worker did not finish:\n{log.read_text()[-3000:]}")
        finally:
            worker.terminate()
            worker.wait(60)
        rate, batches = pipeline_rate(log)
        print(f"pipeline (one worker, to chDB, {args.tokenizer}): {rate:,.0f} events/s ({batches} stored batches)")
    finally:
        tansu.stop()
    ceiling = min(faust_rate, jieba_rate)
    print(f"ratio={rate / ceiling:.2f}")


if __name__ == "__main__":
    main()
