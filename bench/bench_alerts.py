"""Alert latency under load, beside a bare Kafka round trip measured in the same run.

Real Apache Kafka (Maven jars) and Debian's ClickHouse on loopback, one `qunguard worker`, one
`qunguard notifier`, a local webhook (pipeline/devtools/receiver.py). Simulated traffic is produced
at --rate events/s; every --probe-every seconds a gambling message (high severity: an urgent alert)
is produced with the wall clock as its event time. Latency = the webhook's receipt − the moment the
probe was produced. The reference: the same producer settings, a record produced and consumed back
by a plain kafka-python consumer. Prints p50/p95/p99 of both and their ratio. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import config_env, load_config  # noqa: E402
from pipeline.devtools.devservices import start_clickhouse, start_kafka  # noqa: E402
from pipeline.devtools.receiver import Receiver  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.kafka import bootstrap, ensure_topics, producer  # noqa: E402


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
    return pick(0.5), pick(0.95), pick(0.99)


def kafka_round_trip(cfg, n: int = 200) -> list[float]:
    from kafka import KafkaConsumer

    topic = cfg.topic("roundtrip")
    got: dict[int, float] = {}
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap(cfg.kafka.url), auto_offset_reset="latest",
                             group_id="bench-rt", enable_auto_commit=False)
    consumer.poll(1000)  # joined and positioned
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for ms in consumer.poll(50).values():
                for m in ms:
                    got[int(m.value)] = time.time()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    prod = producer(cfg)
    sent: dict[int, float] = {}
    for i in range(n):
        sent[i] = time.time()
        prod.send(topic, str(i).encode())
        prod.flush()
        time.sleep(0.02)
    deadline = time.time() + 10
    while len(got) < n and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    t.join()
    consumer.close()
    return [got[i] - sent[i] for i in got]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=3000.0, help="background events per second")
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--probe-every", type=float, default=0.25)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qg-bench-alerts-"))
    kafka = start_kafka(tmp / "kafka")
    ch = start_clickhouse(tmp / "ch")
    receiver = Receiver("bench-secret").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        pol = tmp / "policy.yaml"
        pol.write_text("alerts: {to: [bench], min_severity: high}\n", encoding="utf-8")
        chan = {"bench": {**receiver.channel(), "per_minute": 100_000}}
        cfg = load_config(env={"QG_KAFKA_URL": kafka.url, "QG_CLICKHOUSE_URL": ch.url, "QG_POLICY_FILE": str(pol),
                               "QG_NOTIFIER_CHANNELS": json.dumps(chan), "QG_WORKER_DATA_DIR": str(tmp / "w"),
                               "QG_KAFKA_PARTITIONS": "4"})
        ensure_topics(cfg)
        reference = kafka_round_trip(cfg)
        for cmd in ("worker", "notifier"):
            procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", cmd], env=config_env(cfg), cwd=ROOT,
                                          stdout=open(tmp / f"{cmd}.log", "wb"), stderr=subprocess.STDOUT))
        time.sleep(12)  # both have joined their groups
        sim = Simulator(orgs=2, groups=60, members=12, seed=3)
        background = sim.records(int(args.rate * args.seconds), envelope=20)
        prod = producer(cfg)
        topic = cfg.topic("events")
        probes: dict[str, float] = {}
        start = time.time()
        next_probe, sent = start, 0
        for rec in background:
            now = time.time()
            if now >= next_probe:
                msg_id = f"probe-{len(probes)}"
                ev = {"kind": "message", "event_id": f"pe-{len(probes)}", "org_id": "bench", "ts": int(now * 1000),
                      "platform": "wecom", "group_id": f"probe-g{len(probes) % 8}", "msg_id": msg_id,
                      "sender_id": f"p{len(probes)}", "text": "澳门赌场百家乐，注册就送彩金"}
                probes[msg_id] = time.time()
                prod.send(topic, key=ev["group_id"].encode(), value=orjson.dumps(ev))
                next_probe += args.probe_every
            prod.send(topic, key=rec.key, value=rec.value)
            sent += max(1, len(rec.valid_ids))
            ahead = sent / args.rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
        prod.flush()
        produced = time.time() - start
        deadline = time.time() + 60
        while time.time() < deadline:
            got = {a["findings"][0]["msg_id"] for _, a in receiver.alerts if a["findings"]}
            if set(probes) <= got:
                break
            time.sleep(0.5)
        arrived = {}
        for at, a in receiver.alerts:
            for f in a["findings"]:
                if f["msg_id"] in probes:
                    arrived.setdefault(f["msg_id"], at)
        lat = [arrived[m] - probes[m] for m in arrived]
        if not lat:
            print("no probe alert arrived; see the logs in", tmp)
            return 1
        p50, p95, p99 = quantiles(lat)
        r50, r95, r99 = quantiles(reference)
        print(f"load: {sent / produced:,.0f} events/s for {produced:.0f} s; "
              f"probes {len(arrived)}/{len(probes)} arrived")
        print(f"alert latency (produce → webhook):  p50 {p50 * 1000:.0f} ms  p95 {p95 * 1000:.0f} ms  "
              f"p99 {p99 * 1000:.0f} ms  (mean {statistics.mean(lat) * 1000:.0f} ms)")
        print(f"bare Kafka produce → consume:       p50 {r50 * 1000:.1f} ms  p95 {r95 * 1000:.1f} ms  "
              f"p99 {r99 * 1000:.1f} ms")
        print(f"ratio p99 alert / p99 round trip = {p99 / r99:.0f}; goal p99 <= 1000 ms: "
              f"{'met' if p99 <= 1.0 else 'not met'}")
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        receiver.close()
        ch.stop()
        kafka.stop()


if __name__ == "__main__":
    sys.exit(main())
