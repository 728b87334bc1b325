"""The OneBot bridge's throughput: events per second from a reverse WebSocket into Kafka
(acknowledged), beside bare JSON parsing (orjson.loads) of the same payloads, in one run.

The payloads are the simulator's traffic as NapCat / go-cqhttp send it (pipeline/devtools/
onebot_traffic.py), half in array form, half in CQ-code strings. A real Apache Kafka (Maven jars)
and `qunguard bridge onebot` as a process; a client plays the implementation over one WebSocket
as fast as it can, and the clock stops when the bridge's /healthz says it has read every frame
and Kafka has acknowledged all their events. A benchmark: it prints, asserts nothing. Last line: ratio = bridge ÷ parse.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.adapters.onebot import map_payload  # noqa: E402
from pipeline.config import config_env, load_config  # noqa: E402
from pipeline.devtools import devservices  # noqa: E402
from pipeline.devtools.onebot_traffic import to_onebot, until_stored  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.kafka import ensure_topics  # noqa: E402


def frames(n: int) -> list[bytes]:
    sim = Simulator(orgs=1, groups=200, members=30, seed=5)
    return [orjson.dumps(f) for kind, f in to_onebot(sim.events(n)) if kind == "frame"]


async def play(port: int, payloads: list[bytes]) -> float:
    from aiohttp import ClientSession

    async with ClientSession() as http:
        began = time.perf_counter()
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/onebot/v11/ws", max_msg_size=0)
        for p in payloads:
            await ws.send_bytes(p)
        await until_stored(http, f"http://127.0.0.1:{port}", len(payloads), interval=0.01)
        elapsed = time.perf_counter() - began
        await ws.close()
        return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    payloads = frames(args.events)
    n_events = sum(len(map_payload(orjson.loads(p), "o")) for p in payloads)
    print(f"{len(payloads):,} OneBot payloads ({n_events:,} events), "
          f"{sum(map(len, payloads)) / len(payloads):.0f} bytes on average")
    parse = []
    for _ in range(args.runs):
        began = time.perf_counter()
        for p in payloads:
            orjson.loads(p)
        parse.append(len(payloads) / (time.perf_counter() - began))
    root = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    kafka = devservices.start_kafka(root / "kafka")
    try:
        rates = []
        for run in range(args.runs):
            port = devservices.free_port()
            cfg = load_config(env={"QG_KAFKA_URL": kafka.url, "QG_KAFKA_TOPIC_PREFIX": f"b{run}.",
                                   "QG_BRIDGE_ORG_ID": "org1", "QG_BRIDGE_ONEBOT_LISTEN": f"127.0.0.1:{port}"})
            ensure_topics(cfg)
            bridge = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "bridge", "onebot"],
                                      env=config_env(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                devservices.wait_port(port, 30, bridge, "bridge")
                elapsed = asyncio.run(play(port, payloads))
            finally:
                devservices.stop_process(bridge, timeout=30)
            rates.append(len(payloads) / elapsed)
    finally:
        kafka.stop()
    fmt = lambda xs: f"{min(xs):,.0f}–{max(xs):,.0f}"  # noqa: E731
    print(f"bridge, WebSocket → Kafka acknowledged: {fmt(rates)} payloads/s over {args.runs} runs")
    print(f"bare orjson.loads of the same payloads:  {fmt(parse)} payloads/s")
    print(f"ratio={sorted(rates)[len(rates) // 2] / sorted(parse)[len(parse) // 2]:.4f}")


if __name__ == "__main__":
    main()
