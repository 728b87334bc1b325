"""The ingest agent: qg.events → decode, validate, tokenize, detect (pipeline.processor) → ClickHouse.

Offsets are committed only after the sink has written the rows they produced (agents/offsets.py);
dead letters, findings and detector state changes are published to their topics before that, so a
crash repeats them at most (consumers key on dl_id / finding_id). The logic lives in pipeline/;
this module only wires it to Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time

import faust
import orjson

from agents.offsets import StoredOffsets
from agents.tables import create_stores
from pipeline.config import Config
from pipeline.engine import Engine
from pipeline.policy import load_policy
from pipeline.processor import Batch, Processor
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.sink.writer import ClickHouseSink
from schemas.records import event_key
from schemas.rows import Source

log = logging.getLogger("qunguard.agent")

# Records per take: small enough that tokenizing one take (up to 100 events an envelope) keeps the
# event loop, and with it the consumer's heartbeats, responsive.
TAKE_RECORDS = 200


class SinkDriver:
    """Holds the events whose rows are queued in the sink and commits them once those rows are written.

    One write is in flight at a time, in a thread, while the agent processes the next records
    (the ClickHouse clients release the GIL while they send); a second write waits for the first,
    which is the backpressure. Writes complete, and their offsets are committed, in order.
    """

    def __init__(self, sink: ClickHouseSink, app: faust.App) -> None:
        self.sink = sink
        self.app = app
        self.offsets = StoredOffsets()
        self.unacked: list[tuple[faust.StreamT, faust.EventT]] = []
        self.lock = asyncio.Lock()
        self.inflight: asyncio.Future | None = None

    async def flush(self) -> None:
        async with self.lock:
            await self._start_write(force=False)

    async def write_now(self) -> None:
        """Write everything queued and wait until it is stored (the caller holds `lock`)."""
        await self._start_write(force=True)
        if self.inflight is not None:
            await self.inflight

    async def _start_write(self, force: bool) -> None:
        if not (self.sink.due() or (force and (self.sink.pending_rows or self.unacked))):
            return  # due() is False when nothing is pending
        if self.inflight is not None:
            await self.inflight
        taken, events = self.sink.take(), self.unacked
        self.unacked = []
        self.inflight = asyncio.ensure_future(self._write(taken, events))

    async def _write(self, taken: dict, events: list[tuple[faust.StreamT, faust.EventT]]) -> None:
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(None, self.sink.write, taken)
        await self.app.producer.flush()  # dead letters, findings, state are out before the offsets move
        for stream, event in events:
            await stream.ack(event)  # Faust's own bookkeeping: a rebalance waits for every ack
        moved = self.offsets.stored((e.message.tp, e.message.offset) for _, e in events)
        if moved:
            await self.app.consumer._commit_offsets(moved)  # noqa: SLF001 -- see agents/offsets.py
        log.info("stored batch: records=%d rows=%d", len(events), rows)


def register(app: faust.App, cfg: Config) -> None:
    events_topic = app.topic(cfg.topic("events"), partitions=cfg.kafka.partitions)
    findings_topic = app.topic(cfg.topic("findings"), partitions=cfg.kafka.partitions)
    dead_topic = app.topic(cfg.topic("deadletter"), partitions=cfg.kafka.partitions)
    alerts_topic = app.topic(cfg.topic("alerts"), partitions=cfg.kafka.partitions)
    last_take = [0.0]  # when the agent last received records (monotonic)
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    policy = load_policy(cfg.policy.file)
    engine = Engine(policy)
    stores = create_stores(app, [d.name for d in engine.detectors], cfg.kafka.partitions)
    engine.stores = dict(stores)
    processor = Processor(cfg, engine)
    driver = SinkDriver(ClickHouseSink(backend, cfg.sink), app)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set, **kwargs: object) -> None:
        driver.offsets.forget(revoked)

    @app.agent(events_topic)
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.noack().noack_take(TAKE_RECORDS, within=cfg.sink.batch_seconds / 2):
            last_take[0] = time.monotonic()
            batch = processor.process(
                (e.value, Source(e.message.topic, e.message.partition, e.message.offset)) for e in events)
            async with driver.lock:
                await publish(batch)
                driver.unacked.extend((stream, e) for e in events)
            await driver.flush()

    async def publish(batch: Batch, timer: bool = False) -> Batch:
        """Queue the batch in the sink and publish its dead letters and findings; rows not yet acked.

        What goes out before the state changes reach the changelog, so that a crash in between
        repeats it (idempotent where it lands) rather than loses it: forwarded membership facts and,
        for a timer's batch, its findings, written to ClickHouse there and then (a record's findings
        need not be: the record is read again until its offset is committed)."""
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(None, driver.sink.admit, batch)
        if batch.forward:
            for ev in batch.forward:
                await events_topic.send(key=event_key(ev).encode(), value=orjson.dumps(ev))
            await app.producer.flush()
        early = timer and len(batch) > 0
        if early:
            await send(batch)
            await driver.write_now()  # flushes the producer too
        for store in stores.values():
            await store.flush()  # before the offsets move (SinkDriver._write flushes the producer first)
        if not early:
            await send(batch)
        return batch

    async def send(batch: Batch) -> None:
        for dl in batch.dead:
            await dead_topic.send(key=dl["dl_id"].encode(), value=orjson.dumps(dl))
        for f in batch.findings:
            await findings_topic.send(key=(f["group_id"] or f["org_id"]).encode(), value=orjson.dumps(f))
        for a in batch.alerts:
            await alerts_topic.send(key=a["group_id"].encode(), value=orjson.dumps(a))

    @app.timer(interval=max(cfg.sink.batch_seconds, 0.1))
    async def flush_idle() -> None:
        await driver.flush()
        for tp, offset in driver.offsets.holes().items():
            log.warning("%s: records from offset %d never arrived; reading them again", tp, offset)
            await app.consumer.seek(tp, offset)

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events_topic.get_topic_name()}

    @app.timer(interval=cfg.worker.timer_seconds)
    async def timers() -> None:
        """Deadlines and state release on the wall clock, the edge where it belongs. While the worker
        works through a backlog, timers wait: a deadline must not fire before the answers to it that
        are still in the backlog have been read."""
        if app.in_recovery or app.rebalancing:
            return  # a timer must see a group's whole state, not a changelog half read
        wall = int(time.time() * 1000)
        if time.monotonic() - last_take[0] < 2.0 and wall - engine.watermark > 300_000:
            return
        async with driver.lock:
            partitions = owned()
            for store in stores.values():
                store.keep_only(partitions)
            now = max(wall - int(cfg.worker.timer_grace_seconds * 1000), engine.watermark)
            await publish(processor.tick(partitions, now), timer=True)
