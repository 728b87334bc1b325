"""Flood detection at scale: throughput and memory per active group, with 100,000 groups talking.

In one run, on the same messages (simulated chatter, repeats and bursts spread over --groups groups,
interleaved the way a busy topic carries them, all within --span seconds of event time so that the
groups are active at once):
  - bare `jieba.lcut` on every text: the tokenization every message pays anyway (the reference);
  - the flood detector through the Engine (flood.repeat and flood.rate, state in dicts, as replay
    and the worker run it, with the worker's garbage-collector settings, processor.tune_gc), and
    its timers ticked every --tick-ms of event time as the worker's timer ticks them;
  - state held as the worker holds it (pipeline/packed_store.py): after every --take messages (the
    worker's take of single-message records) the changed groups are serialised for the changelog
    and rest as that JSON; the next message of a group decodes it. Both costs are in the rate;
  - memory: what the flood state of all groups holds at the end (tracemalloc; the engine's store and
    due-time index, less the state of groups released meanwhile), per active group, and the size
    of one group's changelog record (its JSON), which is what a restart reads back.
Last line: ratio=R, R = flood messages/s ÷ bare jieba messages/s (above 1: flood detection costs
less than tokenizing). A benchmark: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jieba  # noqa: E402
import orjson  # noqa: E402

from pipeline.detectors.flood import FloodDetector  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.engine import Engine  # noqa: E402
from pipeline.packed_store import PackedStore  # noqa: E402
from pipeline.policy import Policy  # noqa: E402
from pipeline.processor import tune_gc  # noqa: E402
from schemas.records import validate_event  # noqa: E402

T0 = 1_793_498_400_000 + 3_600_000


def messages(groups: int, total: int, seed: int, span_s: float) -> list[dict]:
    """`total` messages over `groups` groups in `span_s` seconds of event time, so that every group
    is active at once: everyday chatter, with repeats and bursts (a bot posting a line three times
    within a second or two) mixed in."""
    rng = random.Random(seed)
    sim = Simulator(orgs=2, groups=40, members=12, seed=seed)
    texts = [e["text"] for e in sim.events(20_000) if e["kind"] == "message" and e["text"]][:5_000]
    floods = sim.vocab["floods"]
    out: list[dict] = []
    step = span_s * 1000 / total
    while len(out) < total:
        g = rng.randrange(groups)
        roll = rng.random()
        burst = 3 if roll < 0.02 else 1
        text = rng.choice(floods) if roll < 0.02 else rng.choice(texts)
        for k in range(burst):
            n = len(out)
            out.append(validate_event({
                "kind": "message", "event_id": f"b{n}", "org_id": "o", "ts": T0 + int(n * step) + k * 700,
                "platform": "wecom", "group_id": f"g{g:06d}", "msg_id": f"m{n}",
                "sender_id": f"u{g % 997}-{rng.randrange(12)}", "text": text, "msg_type": "text"}))
    return out[:total]


def run(events: list[dict] | list[bytes], tick_ms: int, take: int) -> tuple[Engine, int]:
    """The events through the flood detector, ticked every `tick_ms` of event time as the worker's
    timer ticks it, its state snapshotted every `take` events; the findings made. Events as bytes
    are decoded one by one, as the worker decodes its records: what the state keeps of them (ids,
    timestamps) is then its own."""
    store = PackedStore()
    engine = Engine(Policy(), detectors=[FloodDetector(Policy())], stores={"flood": store})
    found = 0
    next_tick: int | None = None
    for n, raw in enumerate(events, 1):
        e = orjson.loads(raw) if isinstance(raw, bytes) else raw
        if next_tick is None:
            next_tick = e["ts"] + tick_ms
        elif e["ts"] >= next_tick:
            found += len(engine.tick(next_tick).findings)
            next_tick += tick_ms
        found += len(engine.process(e, []).findings)
        if n % take == 0:
            store.snapshot()
    store.snapshot()
    return engine, found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--span", type=float, default=300, help="seconds of event time the messages cover")
    ap.add_argument("--tick-ms", type=int, default=1000, help="event time between timer ticks")
    ap.add_argument("--take", type=int, default=200,
                    help="messages between state snapshots (agents/app.py TAKE_RECORDS)")
    args = ap.parse_args()

    events = messages(args.groups, args.messages, args.seed, args.span)
    tune_gc()  # as the worker runs (agents/app.py)
    texts = [e["text"] for e in events]
    jieba.lcut("预热")
    sample = texts[:100_000]
    t = time.perf_counter()
    for s in sample:
        jieba.lcut(s)
    jieba_rate = len(sample) / (time.perf_counter() - t)

    t = time.perf_counter()
    _, found = run(events, args.tick_ms, args.take)
    elapsed = time.perf_counter() - t
    # Memory in a second pass: tracemalloc slows every allocation, so it stays out of the timing.
    records = [orjson.dumps(e) for e in events]
    del events[1:]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine, _ = run(records, args.tick_ms, args.take)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    store = engine.stores["flood"]
    active = len(store)
    changelog = sorted(len(orjson.dumps(v)) for v in store.values())
    flood_rate = len(records) / elapsed
    t = time.perf_counter()
    engine.tick(engine.watermark + 3_600_000)
    release = time.perf_counter() - t

    print(f"messages={len(records)} groups={args.groups} active_groups={active} findings={found}")
    print(f"bare jieba: {jieba_rate:,.0f} messages/s ({len(sample):,} texts)")
    print(f"flood detector: {flood_rate:,.0f} messages/s")
    print(f"memory: {held / 1e6:,.1f} MB of flood state, {held / max(active, 1):,.0f} bytes per active group; "
          f"changelog record per group: median {changelog[len(changelog) // 2]} B, max {changelog[-1]} B")
    print(f"release after an hour of quiet: {len(store)} groups left, in {release:.2f} s")
    print(f"ratio={flood_rate / jieba_rate:.2f}")


if __name__ == "__main__":
    main()
