"""The delivery path without Kafka: each step on its own with fakes and an injected clock, and the
whole path killed at every kind of step and restarted from what a real restart would find (the
committed offsets, the saved changelog, ClickHouse as chDB), against replay's findings."""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Collection
from typing import Any

import orjson
import pytest

from agents.stores import TableStore
from pipeline.config import load_config
from pipeline.delivery.clock import EventClock
from pipeline.delivery.forward import envelopes
from pipeline.delivery.order import GIVE_UP_SEEKS, SEEK_AGAIN_SECONDS, OrderGate
from pipeline.delivery.path import DeliveryPath, Record, StateSnapshot
from pipeline.delivery.settled import EARLIEST, Progress, settled, stage_bounds
from pipeline.devtools.simulate import START_TS, Simulator
from pipeline.engine import Engine
from pipeline.policy import load_policy
from pipeline.processor import Batch, Processor
from pipeline.replay import replay
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.sink.writer import ClickHouseSink
from schemas.records import validate_event

TOPIC = "t.events"
PARTS = 3


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- the order step ---------------------------------------------------------------------------

def test_gate_admits_in_order_from_the_committed_offset_and_drops_redeliveries():
    gate = OrderGate(Clock())
    gate.assign((TOPIC, 0), 5)
    assert [gate.admit((TOPIC, 0), o) for o in (5, 6, 6, 5, 7)] == [True, True, False, False, True]
    assert gate.position((TOPIC, 0)) == 8 and gate.dropped == 2


def test_gate_seeks_back_over_a_hole_until_it_fills():
    clock = Clock()
    gate = OrderGate(clock)
    gate.assign((TOPIC, 0), 10)
    # the first record after a restart is not the committed one: the agent lost what it held
    assert not gate.admit((TOPIC, 0), 14)
    assert gate.seeks() == {(TOPIC, 0): 10}
    assert gate.seeks() == {}  # not again at once: records already fetched can overtake a seek
    assert not gate.admit((TOPIC, 0), 15)
    clock.t += SEEK_AGAIN_SECONDS + 0.1
    assert gate.seeks() == {(TOPIC, 0): 10}
    assert [gate.admit((TOPIC, 0), o) for o in range(10, 16)] == [True] * 6
    clock.t += SEEK_AGAIN_SECONDS + 0.1
    assert gate.seeks() == {}


def test_gate_moves_on_over_offsets_that_do_not_exist():
    clock = Clock()
    gate = OrderGate(clock)
    gate.assign((TOPIC, 0), 10)
    for _ in range(GIVE_UP_SEEKS):
        assert not gate.admit((TOPIC, 0), 13)  # 10..12 are transaction markers, say
        clock.t += SEEK_AGAIN_SECONDS + 0.1
        assert gate.seeks() == {(TOPIC, 0): 10}
    assert not gate.admit((TOPIC, 0), 13)
    clock.t += SEEK_AGAIN_SECONDS + 0.1
    assert gate.seeks() == {(TOPIC, 0): 13}
    assert gate.admit((TOPIC, 0), 13)


def test_event_clock_follows_event_time_while_busy_and_the_wall_clock_once_quiet():
    clock = Clock()
    ec = EventClock(clock)
    wall, grace = 10_000_000, 2_000
    ec.assigned(0)
    ec.assigned(1)
    assert ec.bounds(wall, grace, [0, 1]) == {0: EARLIEST, 1: EARLIEST}  # just assigned: wait for reads
    ec.read({0: 5_000_000, 1: wall + 3_600_000})  # old traffic; a future-dated event
    assert ec.bounds(wall, grace, [0, 1]) == {0: 5_000_000 - grace, 1: wall - grace}
    ec.read({0: 4_000_000})  # an earlier event never moves the clock back
    clock.t += 1.9
    assert ec.bounds(wall, grace, [0])[0] == 5_000_000 - grace
    clock.t += 0.1  # nothing read for the grace: idle, the wall clock's moment
    assert ec.bounds(wall, grace, [0, 1, 2]) == {0: wall - grace, 1: wall, 2: wall - grace}


def test_caught_up_is_measured_from_the_high_watermark():
    gate = OrderGate(Clock())
    gate.assign((TOPIC, 0), 0)
    gate.assign((TOPIC, 1), 4)
    assert gate.caught_up({(TOPIC, 0): 0, (TOPIC, 1): 4})
    assert not gate.caught_up({(TOPIC, 0): 3, (TOPIC, 1): 4})  # records waiting: behind, however idle
    assert not gate.caught_up({(TOPIC, 0): None})  # not fetched yet
    for o in range(3):
        gate.admit((TOPIC, 0), o)
    assert gate.caught_up({(TOPIC, 0): 3, (TOPIC, 1): 4})


# --- fakes for the edges --------------------------------------------------------------------

class Kill(Exception):
    """The process dies here (SIGKILL): nothing after this point happens."""


class FakeKafka:
    """The log, the committed offsets, the changelogs and the published topics of one test."""

    def __init__(self) -> None:
        self.log: dict[int, list[tuple[bytes, bool]]] = {p: [] for p in range(PARTS)}
        self.committed: dict[tuple[str, int], int] = {}
        self.progress: dict[int, Progress] = {}
        self.ticks: dict[int, dict[str, int]] = {}  # how far each partition's stages ticked
        self.changelog: dict[str, dict[str, bytes | None]] = {}
        self.published: dict[str, list[dict]] = {"findings": [], "dead": [], "alerts": [], "early": []}

    @staticmethod
    def partition(key: bytes) -> int:
        return zlib.crc32(key) % PARTS

    def append(self, key: bytes, value: bytes, internal: bool = False) -> None:
        self.log[self.partition(key)].append((value, internal))


class FakeTable:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class FakePorts:
    def __init__(self, kafka: FakeKafka, stores: dict[str, TableStore], kill_at: int | None = None,
                 kill_in: Collection[str] = ()) -> None:
        self.kafka = kafka
        self.stores = stores
        self.calls: list[str] = []
        self.kill_at = kill_at
        self.kill_in = set(kill_in)
        self.seeks: list[tuple[tuple[str, int], int]] = []

    def step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.kill_in and self.kill_at is not None and len(self.calls) >= self.kill_at:
            raise Kill(name)

    async def start_offsets(self, tps):
        return {tp: self.kafka.committed.get(tp, 0) for tp in tps}

    async def publish(self, batch: Batch) -> None:
        self.step("publish")
        self.kafka.published["findings"] += batch.findings
        self.kafka.published["dead"] += batch.dead
        self.kafka.published["alerts"] += [a for a in batch.alerts if a["alert_id"] not in batch.early]
        # as the worker sends them: one envelope per partition (small, so that some split)
        for partition, _, value in envelopes(batch.forward, self.kafka.partition, 2_000):
            self.kafka.log[partition].append((value, True))

    async def publish_alerts(self, alerts: list[dict]) -> None:
        self.step("publish_alerts")
        self.kafka.published["alerts"] += alerts
        self.kafka.published["early"] += alerts

    def snapshot_state(self) -> StateSnapshot:
        return {n: snap for n, s in self.stores.items() if (snap := s.snapshot())}

    def state_changed(self) -> bool:
        return any(s.dirty for s in self.stores.values())

    async def save_state(self, snapshot: StateSnapshot) -> None:
        self.step("save_state")
        for name, keys in snapshot.items():
            for key, (_, value) in keys.items():
                self.kafka.changelog.setdefault(name, {})[key] = value

    async def commit(self, offsets) -> None:
        self.step("commit")
        self.kafka.committed.update(offsets)

    async def progress(self, offsets, times) -> None:
        for (_, p), offset in offsets.items():
            before = self.kafka.progress.get(p)
            seen = [t for t in (before.event_time if before else None, times.get((TOPIC, p))) if t is not None]
            self.kafka.progress[p] = Progress(offset, max(seen) if seen else None)

    async def ticked(self, reached) -> None:
        self.kafka.ticks.update(reached)

    async def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))


def _held(kafka: FakeKafka, engine: Engine, grace: int = 10_000) -> dict[str, int]:
    """How far the stages fed from other partitions may tick, as the worker's timer reads it."""
    forwarded = settled(kafka.progress, {p: len(kafka.log[p]) for p in range(PARTS)}, {}, grace)
    return stage_bounds(forwarded, kafka.ticks, range(PARTS),
                        [(d.name, bool(getattr(d, "settles", False))) for d in engine.detectors])


async def _settle(path: DeliveryPath, engine: Engine, kafka: FakeKafka, rng: random.Random, until: int,
                  chunk: int = 7, bounds_of=None, rounds: int = 12, grace: int = 10_000) -> None:
    """The worker's timer until nothing changes: caught up with every record (forwards included),
    then a tick of every partition as far as the board lets each stage go."""
    last = None
    for _ in range(rounds):
        await _consume(path, kafka, rng, chunk)
        await path.drain(30)  # the sink's flush timer: what was read is stored, its progress recorded
        held = _held(kafka, engine, grace)
        bounds = bounds_of(path) if bounds_of else None
        sizes = [len(kafka.log[p]) for p in range(PARTS)]
        await path.tick(max(bounds.values()) if bounds else until, range(PARTS), held, bounds)
        await path.drain(30)
        if path.broken is not None:
            raise path.broken
        if sizes == [len(kafka.log[p]) for p in range(PARTS)] and held == last:
            return
        last = held
    raise AssertionError(f"the timers did not settle in {rounds} rounds")


class KillingSink(ClickHouseSink):
    """A real sink whose k-th write dies after the rows reached ClickHouse (the ack is lost)."""

    kill_after_write: int | None = None
    kill_before_write: int | None = None
    writes = 0

    def write(self, taken):
        self.writes += 1
        if self.kill_before_write is not None and self.writes >= self.kill_before_write:
            raise Kill("before write")
        n = super().write(taken)
        if self.kill_after_write is not None and self.writes >= self.kill_after_write:
            raise Kill("after write")
        return n


def _worker(kafka: FakeKafka, backend, cfg, kill: tuple[str, int] | None, clock=time.monotonic, policy=None):
    """A worker process as a restart finds things: state recovered from the changelog."""
    engine = Engine(policy)
    stores = {}
    for det in engine.detectors:
        data = {k: orjson.loads(v) for k, v in kafka.changelog.get(det.name, {}).items() if v is not None}
        stores[det.name] = TableStore(FakeTable(data))
    engine.stores = dict(stores)
    engine.reindex()
    where, at = kill if kill else ("", None)
    ports = FakePorts(kafka, stores, kill_at=at, kill_in={where})
    sink = KillingSink(backend, cfg.sink, timer_topic="t.timer")
    if where == "write":
        sink.kill_after_write = at
    if where == "before-write":
        sink.kill_before_write = at
    return DeliveryPath(Processor(cfg, engine), sink, ports, clock=clock), engine


async def _consume(path: DeliveryPath, kafka: FakeKafka, rng: random.Random, chunk: int = 7) -> None:
    """Read the log to its end, as a consumer does; deliver out of order and twice now and then."""
    while True:
        # The consumer fetches where the worker expects the next record (its seeks).
        pos = {p: path.gate.position((TOPIC, p)) or kafka.committed.get((TOPIC, p), 0) for p in range(PARTS)}
        batch = []
        for p in range(PARTS):
            for off in range(pos[p], min(pos[p] + chunk, len(kafka.log[p]))):
                value, internal = kafka.log[p][off]
                batch.append(Record(value, TOPIC, p, off, internal))
        if not batch:
            break
        if len(batch) > 2 and rng.random() < 0.2:  # a redelivery, and a record that overtook others
            batch = batch[: len(batch) // 2] + batch[1:]
            batch.insert(0, batch.pop())
        await path.submit(batch)
        if path.broken is not None:
            raise path.broken
    # as the worker's timer does: a partition with nothing new since its commit starts there
    unknown = [(TOPIC, p) for p in range(PARTS) if not path.gate.knows((TOPIC, p))]
    if unknown:
        path.assigned(await path.ports.start_offsets(unknown))
    assert path.gate.caught_up({(TOPIC, p): len(kafka.log[p]) for p in range(PARTS)})


async def _run(kafka: FakeKafka, backend, cfg, kills: list[tuple[str, int]], until: int, rng: random.Random,
               chunk: int = 7, policy=None) -> int:
    """Consume the whole log (records appear as forwards are published), killing the worker at each
    planned point and restarting it; deliver out of order and twice now and then, as Faust does."""
    restarts = 0
    kills = list(kills)
    while True:
        path, engine = _worker(kafka, backend, cfg, kills.pop(0) if kills else None, policy=policy)
        try:
            await _settle(path, engine, kafka, rng, until, chunk)
            return restarts
        except Kill:
            restarts += 1
            await asyncio.sleep(0)  # a write thread still running dies with the process
            path.sink.stop()


def _events(n: int, seed: int, linger_ms: int | None = None) -> list[tuple[bytes, bytes]]:
    sim = Simulator(orgs=2, groups=12, members=8, seed=seed)
    return [(r.key, r.value) for r in sim.records(n, malformed=12, envelope=5, linger_ms=linger_ms)]


@pytest.mark.parametrize("kills", [
    [],
    [("publish", 5), ("save_state", 3), ("commit", 4)],
    [("write", 2), ("write", 1), ("publish", 9)],
    [("before-write", 2), ("before-write", 3), ("before-write", 1)],
    [("save_state", 1), ("commit", 1), ("write", 3), ("publish", 2)],
], ids=["no-fault", "kill-publish-save-commit", "kill-after-writes", "kill-before-writes", "kill-everywhere"])
def test_killed_anywhere_the_path_stores_everything_once_and_agrees_with_replay(tmp_path, kills):
    records = _events(3000, seed=11)
    kafka = FakeKafka()
    for key, value in records:
        kafka.append(key, value)
    lines = b"\n".join(v for _, v in records)
    expected = replay(lines.splitlines(), until=None)
    until = max(f["ts"] for f in expected.findings) + 3 * 86_400_000
    expected = replay(lines.splitlines(), until=until)
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t.", "QG_SINK_BATCH_ROWS": "1500"})
    try:
        restarts = asyncio.run(_run(kafka, backend, cfg, kills, until, random.Random(5)))
    except BaseException:
        backend.close()
        raise
    assert restarts == len(kills)
    db = backend.database
    valid = sum(1 for f in expected.findings) and expected.events
    rows, distinct = backend.query(f"SELECT count(), uniqExact(event_id) FROM {db}.raw_events")[0]
    assert (rows, distinct) == (valid, valid)  # nothing lost, nothing stored twice (no FINAL)
    f_rows, f_distinct = backend.query(f"SELECT count(), uniqExact(finding_id) FROM {db}.findings")[0]
    assert f_rows == f_distinct
    stored = {r[0] for r in backend.query(f"SELECT finding_id FROM {db}.findings")}
    assert stored == {f["finding_id"] for f in expected.findings}
    dead_rows, dead_distinct = backend.query(f"SELECT count(), uniqExact(dl_id) FROM {db}.deadletter")[0]
    assert dead_rows == dead_distinct == len(expected.dead)
    # every stored finding was published at least once; copies only from kills between the two
    assert {f["finding_id"] for f in kafka.published["findings"]} == stored
    # each partition's progress: stored to its end, with the latest event time stored from it
    latest = dict(backend.query(f"SELECT src_partition, max(ts) FROM {db}.raw_events GROUP BY src_partition"))
    assert {p: (g.offset, g.event_time) for p, g in kafka.progress.items()} == {
        p: (len(kafka.log[p]), latest[p]) for p in range(PARTS)}
    backend.close()


URGENT_TO_HOOK = "alerts: {to: [hook], min_severity: high}\n"  # high findings: an alert at once


@pytest.mark.parametrize("kills", [[], [("publish_alerts", 3), ("write", 2), ("before-write", 2), ("publish", 4)]],
                         ids=["no-fault", "killed"])
def test_urgent_alerts_published_during_detection_are_each_stored_once_and_agree_with_replay(tmp_path, kills):
    (tmp_path / "policy.yaml").write_text(URGENT_TO_HOOK, encoding="utf-8")
    policy = load_policy(tmp_path / "policy.yaml")
    records = _events(3000, seed=11)
    kafka = FakeKafka()
    for key, value in records:
        kafka.append(key, value)
    lines = b"\n".join(v for _, v in records).splitlines()
    until = max(f["ts"] for f in replay(lines, until=None).findings) + 3 * 86_400_000
    expected = {a["alert_id"] for a in replay(lines, until=until, policy=policy).alerts}
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t.", "QG_SINK_BATCH_ROWS": "1500"})
    try:
        assert asyncio.run(_run(kafka, backend, cfg, kills, until, random.Random(5), policy=policy)) == len(kills)
        rows, distinct = backend.query(f"SELECT count(), uniqExact(alert_id) FROM {backend.database}.alerts")[0]
        stored = {r[0] for r in backend.query(f"SELECT alert_id FROM {backend.database}.alerts")}
    finally:
        backend.close()
    assert expected and stored == expected and rows == distinct
    published = [a["alert_id"] for a in kafka.published["alerts"]]
    assert set(published) == stored
    early = {a["alert_id"] for a in kafka.published["early"]}
    assert len(early) > len(stored) // 2  # most went out while their batch was still being detected
    if not kills:
        assert len(published) == len(stored)  # and none twice: not early, then again with the batch


def _urgent_path(tmp_path) -> tuple[DeliveryPath, FakeKafka, Any]:
    """A path with urgent alerts to a channel, the real sink over chDB, fake Kafka."""
    (tmp_path / "policy.yaml").write_text(URGENT_TO_HOOK, encoding="utf-8")
    engine = Engine(load_policy(tmp_path / "policy.yaml"))
    stores = {d.name: TableStore(FakeTable({})) for d in engine.detectors}
    engine.stores = dict(stores)
    kafka = FakeKafka()
    ports = FakePorts(kafka, stores)
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t."})
    path = DeliveryPath(Processor(cfg, engine), ClickHouseSink(backend, cfg.sink, timer_topic="t.timer"), ports)
    return path, kafka, backend


def test_an_urgent_alert_is_published_while_the_rest_of_its_batch_is_detected(tmp_path):
    import threading

    path, kafka, backend = _urgent_path(tmp_path)
    processor, ports = path.processor, path.ports
    handed = threading.Event()
    seen_during_detection = []
    tokens = processor.tokenizer.tokens

    def tokenize(text: str) -> list[str]:
        if text == "下一条消息":  # after the gambling message, in the same batch
            seen_during_detection.append(handed.wait(10))
        return tokens(text)

    processor.tokenizer.tokens = tokenize  # type: ignore[method-assign]
    publish_alerts = ports.publish_alerts

    async def publish_and_tell(alerts):
        await publish_alerts(alerts)
        handed.set()

    ports.publish_alerts = publish_and_tell  # type: ignore[method-assign]

    def message(i: int, text: str) -> Record:
        ev = {"kind": "message", "event_id": f"e{i}", "org_id": "o1", "ts": START_TS + i * 1000,
              "platform": "wecom", "group_id": "g1", "msg_id": f"m{i}", "sender_id": f"u{i}", "text": text}
        return Record(orjson.dumps(ev), TOPIC, 0, i)

    async def go() -> None:
        await path.submit([message(0, "早上好"), message(1, "收到")])  # the sink meets the partition
        await path.submit([message(2, "澳门赌场百家乐，注册就送彩金"), message(3, "下一条消息")])
        await path.drain(30)

    try:
        asyncio.run(go())
        stored = [r[0] for r in backend.query(f"SELECT alert_id FROM {backend.database}.alerts")]
    finally:
        backend.close()
    assert seen_during_detection == [True]  # the alert was with the producer before the next message
    assert [a["alert_id"] for a in kafka.published["alerts"]] == stored and len(stored) == 1  # once
    assert kafka.published["early"] == kafka.published["alerts"]


def test_the_first_batch_of_a_partition_publishes_its_alerts_with_the_batch(tmp_path):
    """Until the sink has asked ClickHouse what it holds of a partition, an alert may be one a
    previous worker stored and published: it goes the normal way, where admit drops it if stored."""
    path, kafka, backend = _urgent_path(tmp_path)
    ev = {"kind": "message", "event_id": "e0", "org_id": "o1", "ts": START_TS, "platform": "wecom",
          "group_id": "g1", "msg_id": "m0", "sender_id": "u0", "text": "澳门赌场百家乐，注册就送彩金"}

    async def go() -> None:
        await path.submit([Record(orjson.dumps(ev), TOPIC, 0, 0)])
        await path.drain(30)

    try:
        asyncio.run(go())
    finally:
        backend.close()
    assert len(kafka.published["alerts"]) == 1 and kafka.published["early"] == []


def test_timers_caught_up_with_a_producer_still_sending_old_traffic_agree_with_replay(tmp_path):
    """Last month's traffic produced now (a bridge catching up, a backlog): the worker is caught up
    between the producer's sends and its timer fires on today's wall clock. Deadlines must wait for
    the answers still to come (each partition's event time), and fire once the producer is quiet."""
    grace = 2_000
    records = _events(3000, seed=12, linger_ms=grace // 2)  # as a bridge sends: bounded lateness
    lines = b"\n".join(v for _, v in records).splitlines()
    wall = START_TS + 60 * 86_400_000  # today: the traffic is from weeks before
    expected = replay(lines, until=wall)
    assert any(f["rule"].startswith("deadline.") for f in expected.findings)  # the traffic has deadlines
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t.", "QG_SINK_BATCH_ROWS": "500"})
    clock = Clock()
    kafka = FakeKafka()
    rng = random.Random(6)

    def bounds_of(path: DeliveryPath) -> dict[int, int]:
        return path.event_clock.bounds(wall, grace, range(PARTS))

    async def go() -> None:
        path, engine = _worker(kafka, backend, cfg, None, clock=clock)
        for start in range(0, len(records), 60):  # the producer sends; the worker keeps up
            for key, value in records[start:start + 60]:
                kafka.append(key, value)
            await _consume(path, kafka, rng)
            clock.t += 0.2
            bounds = bounds_of(path)
            await path.tick(max(bounds.values()), range(PARTS), _held(kafka, engine, grace), bounds)
            await path.drain(30)
        clock.t += grace / 1000  # the producer is done: quiet partitions follow the wall clock
        await _settle(path, engine, kafka, rng, wall, bounds_of=bounds_of, grace=grace)

    try:
        asyncio.run(go())
        stored = {r[0]: r[1] for r in backend.query(f"SELECT finding_id, rule FROM {backend.database}.findings")}
    finally:
        backend.close()
    want = {f["finding_id"]: f["rule"] for f in expected.findings}
    assert stored == want, sorted({*stored.items()} ^ {*want.items()})[:10]


# --- the steps' order and the write in flight -------------------------------------------------

class Sink:
    """A sink that writes nowhere, with a write that can be held."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.pending_rows = 0
        self.release = None
        self.stopped = False

    def admit(self, batch: Batch) -> Batch:
        self.pending_rows += len(batch)
        return batch

    def unseen(self, src, alert_id: str) -> bool:
        return False

    def due(self) -> bool:
        return True

    def take(self):
        self.pending_rows = 0
        return {}

    def write(self, taken) -> int:
        self.calls.append("write")
        if self.release is not None:
            self.release.wait(10)
        return 0

    def stop(self) -> None:
        self.stopped = True


def _path(tmp_path, calls: list[str]):
    kafka = FakeKafka()
    engine = Engine()
    stores = {d.name: TableStore(FakeTable({})) for d in engine.detectors}
    engine.stores = dict(stores)
    ports = FakePorts(kafka, stores)
    ports.calls = calls
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t."})
    return DeliveryPath(Processor(cfg, engine), Sink(calls), ports), kafka


def _records(n: int, start: int = 0) -> list[Record]:
    sim = Simulator(orgs=1, groups=1, members=4, seed=2)
    return [Record(r.value, TOPIC, 0, start + i) for i, r in enumerate(sim.records(n))]


def test_publish_then_write_then_state_then_commit(tmp_path):
    calls: list[str] = []
    path, kafka = _path(tmp_path, calls)

    async def go():
        await path.submit(_records(20))
        await path.wait_written()

    asyncio.run(go())
    assert calls == ["publish", "write", "save_state", "commit"]
    assert kafka.committed == {(TOPIC, 0): 20}
    assert kafka.changelog  # the state after those records


def test_the_state_is_serialised_once_per_write_as_it_is_after_the_writes_last_batch(tmp_path):
    calls: list[str] = []
    path, kafka = _path(tmp_path, calls)
    snapshots = []
    snapshot = path.ports.snapshot_state

    def counted():
        snapshots.append(snapshot())
        return snapshots[-1]

    path.ports.snapshot_state = counted
    takes = [0]
    path.sink.due = lambda: takes[0] >= 3  # the sink's size or age is reached at the third batch
    records = _records(30)

    async def go():
        for i in range(3):
            takes[0] += 1
            await path.submit(records[i * 10:(i + 1) * 10])
        await path.wait_written()

    asyncio.run(go())
    assert calls == ["publish", "publish", "publish", "write", "save_state", "commit"]
    assert len([s for s in snapshots if s]) == 1  # the three batches' changes, serialised once
    stores = path.processor.engine.stores
    assert {name: {k: orjson.loads(v) for k, v in keys.items()} for name, keys in kafka.changelog.items()} == {
        name: {k: store[k] for k in store} for name, store in stores.items() if len(store)}
    assert kafka.committed == {(TOPIC, 0): 30}


def test_one_write_in_flight_and_close_gives_up_on_a_stuck_write(tmp_path):
    import threading

    calls: list[str] = []
    path, kafka = _path(tmp_path, calls)
    path.sink.release = threading.Event()

    async def go():
        await path.submit(_records(10))
        second = asyncio.ensure_future(path.submit(_records(10, start=10)))
        await asyncio.sleep(0.3)
        assert not second.done() and calls.count("write") == 1  # waits for the first write
        t = time.monotonic()
        stored = await path.close(0.5)  # ClickHouse hangs: the stop does not
        took = time.monotonic() - t
        assert kafka.committed == {}  # nothing was stored, so nothing is committed
        path.sink.release.set()
        await second
        return stored, took

    stored, took = asyncio.run(go())
    assert stored is False and took < 2 and path.sink.stopped


def test_a_failed_write_commits_nothing_after_it(tmp_path):
    calls: list[str] = []
    path, kafka = _path(tmp_path, calls)
    fatal: list[BaseException] = []
    path.on_fatal = fatal.append

    def broken(taken):
        raise OSError("disk full")

    path.sink.write = broken

    async def go():
        await path.submit(_records(10))
        with pytest.raises(OSError):
            await path.wait_written()
        await path.submit(_records(10, start=10))

    asyncio.run(go())
    assert kafka.committed == {} and isinstance(fatal[0], OSError) and path.broken is fatal[0]


def test_a_strike_found_by_a_timer_reaches_the_ladder_in_event_time_order(tmp_path):
    """A temporary group expires at midnight (a timer's finding, a strike for its owner where the
    policy counts group rules); by the time that timer fires, the owner's later posts have reached
    the ladder. The ladder must apply the expiry first, as replay does: warn at midnight, mute at
    the third strike, and no second warn."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from pipeline.policy import Policy

    policy = Policy({"sanctions": {"rules": ["content.*", "group.*"]}})
    zone = ZoneInfo("Asia/Shanghai")
    at = lambda d, h: int(datetime(2026, 11, d, h, tzinfo=zone).timestamp() * 1000)  # noqa: E731
    base = {"org_id": "o", "group_id": "t1"}
    events = [{**base, "kind": "group", "event_id": "g1", "ts": at(2, 10), "action": "create", "name": "项目临时群",
               "owner_id": "zw", "registered": True, "temporary": True, "ends_at": at(5, 18)}]
    events += [{**base, "kind": "message", "event_id": f"m{i}", "ts": at(11, 9 + i), "platform": "wecom",
                "msg_id": f"m{i}", "sender_id": "zw", "text": f"澳门赌场百家乐，注册就送彩金 {i}"} for i in range(2)]
    lines = [orjson.dumps(e) for e in events]
    until = at(12, 12)
    expected = replay(lines, until=until, policy=policy)
    sanctions = sorted(((f["rule"], f["ts"]) for f in expected.findings if f["rule"].startswith("sanction.")),
                       key=lambda s: s[1])
    assert sanctions == [("sanction.warn", at(11, 0)), ("sanction.mute", at(11, 10))]
    backend = connect(f"chdb:{tmp_path / 'db'}")
    migrate(backend)
    cfg = load_config(env={"QG_KAFKA_TOPIC_PREFIX": "t."})
    kafka = FakeKafka()
    for e, line in zip(events, lines, strict=True):
        kafka.append(e["group_id"].encode(), line)

    async def go() -> None:
        path, engine = _worker(kafka, backend, cfg, None, policy=policy)
        await _settle(path, engine, kafka, random.Random(7), until)

    try:
        asyncio.run(go())
        stored = backend.query(f"SELECT rule, ts FROM {backend.database}.findings "
                               f"WHERE startsWith(rule, 'sanction.') ORDER BY ts")
        ids = {r[0] for r in backend.query(f"SELECT finding_id FROM {backend.database}.findings")}
    finally:
        backend.close()
    assert [tuple(r) for r in stored] == sanctions
    assert ids == {f["finding_id"] for f in expected.findings}


def test_envelopes_written_before_as_dicts_are_read_and_released_like_todays():
    """A changelog recovered from a release that stored envelopes as dicts: the engine reads those
    states on (and rewrites them as lists), and a rebalance forgets the keys of partitions this
    worker no longer owns whichever way they were written."""
    from pipeline.detectors import Context
    from pipeline.detectors.flood import LAST, FloodDetector

    def message(group: str, n: int, ts: int) -> dict[str, Any]:
        return validate_event({"kind": "message", "event_id": f"e{n}", "org_id": "o", "ts": ts, "platform": "wecom",
                               "group_id": group, "msg_id": f"m{n}", "sender_id": "u1", "text": "大家好"})

    flood = FloodDetector()
    t0 = START_TS

    def state(group: str) -> Any:
        return flood.on_event(message(group, 0, t0), None, Context(t0)).state

    store = TableStore(FakeTable({
        "g-old": {"v": flood.state_version, "s": state("g-old"), "at": [1, 7, 0]},
        "g-new": [flood.state_version, state("g-new"), [1, 8, 0]],
        "g-gone": {"v": flood.state_version, "s": state("g-gone"), "at": [3, 2, 0]},
        "g-gone2": [flood.state_version, state("g-gone2"), [3, 4, 0]],
    }))
    engine = Engine(detectors=[flood], stores={"flood": store})
    assert engine.reindex() == 4
    assert store.keep_only({1}) == 2 and sorted(store) == ["g-new", "g-old"]
    later = message("g-old", 1, t0 + 1000)
    engine.process(later, [], (1, 7, 0))  # at or before the stored position: already in the state
    assert store["g-old"]["at"] == [1, 7, 0]
    engine.process(later, [], (1, 9, 0))
    version, held, position = store["g-old"]
    assert version == flood.state_version and position == [1, 9, 0] and held[LAST] == later["ts"]
