"""The Faust application, and the only module that imports Faust.

Thin wiring: the events topic's records go to the delivery path (pipeline/delivery/path.py), whose
steps are plain Python; `FaustPorts` does for it what needs Kafka (publish, save detector state to
the changelogs, commit, seek, committed offsets, lag). Every call into Faust's private API is in
`FaustPorts`, and tests/test_faust_adapter.py fails if Faust changes any of them.

Faust's own offset tracking is switched off: records are never acked (so Faust never commits and
never waits for acks at a rebalance or a shutdown, `stream_wait_empty=False`), and the path
commits what it stored.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP as FaustTP

from agents.stores import Outgoing, TableStore, create_stores
from pipeline.config import Config
from pipeline.delivery.forward import envelopes
from pipeline.delivery.logs import install_rate_limit
from pipeline.delivery.order import TP
from pipeline.delivery.path import DeliveryPath, Record, StateSnapshot
from pipeline.delivery.settled import settled, stage_bounds
from pipeline.engine import Engine
from pipeline.kafka import ProgressBoard, TickBoard, committed_offsets, key_partition
from pipeline.metrics import WorkerMetrics, serve
from pipeline.policy import load_policy
from pipeline.processor import Batch, Processor, tune_gc
from pipeline.sink.backends import connect
from pipeline.sink.migrate import migrate
from pipeline.sink.writer import ClickHouseSink
from schemas.rows import deadletter_message

log = logging.getLogger("qunguard.agent")

# Records per take: with envelopes of up to 100 events, a take is a few thousand events; detection
# runs in a thread, so the event loop (and the consumer's heartbeats) never wait for it.
TAKE_RECORDS = 200
# How long a take waits to fill: what an urgent alert waits at least before it is published (the
# writes still batch by sink.batch_seconds). Measured: 0.5 s gave a p99 of 1.4 s produce → webhook.
TAKE_SECONDS = 0.1
FEW_RECORDS = 16  # fewer go to the producer one by one, more as record batches (FaustPorts._send_all)
FORWARD_HEADER = "qg-origin"
SHUTDOWN_SECONDS = 8.0  # what a stopping worker gives its last write before it leaves it to the next
HARD_EXIT_SECONDS = 25.0  # a stop that still hangs after this (a broker gone) ends the process


class QunguardApp(faust.App):
    """Faust's App with one hook before Faust stops the consumer: the path stores what it took."""

    before_stop: Callable[[], Awaitable[None]] | None = None
    metrics_runner: Any = None  # the /metrics and /healthz server (pipeline/metrics.py)

    async def on_stop(self) -> None:
        if self.before_stop is not None:
            watchdog = threading.Timer(HARD_EXIT_SECONDS, _hard_exit)
            watchdog.daemon = True
            watchdog.start()
            await self.before_stop()
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        await super().on_stop()


def _hard_exit() -> None:
    log.error("still stopping after %.0fs; exiting (nothing uncommitted is lost: it is read again)",
              HARD_EXIT_SECONDS)
    logging.shutdown()
    os._exit(1)


def create_app(cfg: Config) -> QunguardApp:
    session = cfg.kafka.session_timeout_seconds
    Path(cfg.worker.data_dir).mkdir(parents=True, exist_ok=True)
    app = QunguardApp(
        cfg.worker.app_id,
        broker=cfg.kafka.url,
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=cfg.kafka.partitions,
        web_enabled=False,
        datadir=str(Path(cfg.worker.data_dir) / f"worker-{os.getpid()}"),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session,
        broker_heartbeat_interval=max(session / 5, 0.5),
        broker_rebalance_timeout=max(session * 3, 30.0),
        broker_commit_interval=3600.0,  # Faust commits nothing (nothing is acked); the path commits
        stream_wait_empty=False,
        producer_max_request_size=cfg.kafka.max_message_bytes,
        # A partition's batch fills while the one before it is in flight; at Faust's 16 KB a
        # write's changelog (thousands of keys) waited for room every few dozen records
        # (measured: 0.6 ms a record; 1 MB: 0.05 s for a write's 1,400 keys).
        producer_max_batch_size=min(1 << 20, cfg.kafka.max_message_bytes),
        consumer_max_fetch_size=cfg.kafka.max_message_bytes * 2,
        stream_buffer_maxsize=2048,
        # Detector state lives in memory and is recovered from its changelog; a standby copy would
        # double the memory for a faster failover (agents/stores.py).
        table_standby_replicas=0,
    )
    register(app, cfg)
    return app


class FaustPorts:
    """What the delivery path needs from Kafka, done through Faust (pipeline.delivery.path.Ports)."""

    def __init__(self, app: faust.App, cfg: Config, stores: dict[str, TableStore]) -> None:
        self.app = app
        self.cfg = cfg
        self.stores = stores
        p = cfg.kafka.partitions
        self.events = app.topic(cfg.topic("events"), partitions=p)
        self.findings = app.topic(cfg.topic("findings"), partitions=p)
        self.dead = app.topic(cfg.topic("deadletter"), partitions=p)
        self.alerts = app.topic(cfg.topic("alerts"), partitions=p)
        self.board = ProgressBoard(cfg, f"{cfg.worker.app_id}-progress")
        self.ticks = TickBoard(cfg, f"{cfg.worker.app_id}-ticked", self.events.get_topic_name())
        self.stages: list[tuple[str, bool]] = []  # (name, settles) in the engine's order

    def _partition_of(self, key: bytes) -> int:
        return key_partition(key, self.cfg.kafka.partitions)

    async def start_offsets(self, tps: Collection[TP]) -> dict[TP, int | None]:
        committed = await asyncio.to_thread(committed_offsets, self.cfg, self.cfg.worker.app_id, list(tps))
        # A worker killed between its commit and its progress record left the board behind what is
        # stored: the new owner brings it up to the commit (keeping the event time it has), or the
        # stages fed by forwards would wait for records stored already (pipeline/delivery/settled.py).
        stored = {tp: o for tp, o in committed.items() if o is not None and tp[0] == self.cfg.topic("events")}
        if stored:
            try:
                await asyncio.to_thread(self.board.catch_up, stored)
            except Exception as exc:  # noqa: BLE001 -- advisory, as after a commit
                log.warning("progress not recorded at assignment (%s: %s)", type(exc).__name__, exc)
        return {tp: committed.get(tp) for tp in tps}

    async def _send_all(self, topic: str, records: list[Outgoing],
                        headers: list[tuple[str, bytes]] | None = None) -> None:
        """Hand records to the producer as one record batch per partition, built here: aiokafka's
        `send` costs a future, a metadata wait and a log call per record (measured: 8 µs of CPU a
        record against 2 µs, and far more with detection holding the GIL beside it). A record
        without a partition goes where its key hashes, as the default partitioner sends it. The
        batches join aiokafka's queue, so Faust's `flush` covers them like any record. Not
        `Topic.send` either: its layers suspend the event loop at every record, and with detection
        busy in a thread each resumption waited for the GIL (about 1.5 ms a record)."""
        if not records:
            return
        producer: Any = self.app.producer
        kafka = producer._ensure_producer()  # noqa: SLF001 -- aiokafka's, which Faust started
        if len(records) < FEW_RECORDS:
            # a batch joins the queue only once the partition's batch before it has left: a few
            # records at a time (an urgent alert each) would wait for the network one by one
            for key, value, partition in records:
                await kafka.send(topic, value, key=key, partition=partition, headers=headers)
            return
        count = len(await kafka.partitions_for(topic))
        extra = headers or []
        builders: dict[int, Any] = {}
        for key, value, partition in records:
            if partition is None:
                partition = key_partition(key, count)
            builder = builders.get(partition)
            if builder is None:
                builder = builders[partition] = kafka.create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=extra) is None:  # full
                await kafka.send_batch(builder, topic, partition=partition)
                builder = builders[partition] = kafka.create_batch()
                builder.append(key=key, value=value, timestamp=None, headers=extra)
        for partition, builder in builders.items():
            await kafka.send_batch(builder, topic, partition=partition)

    async def publish(self, batch: Batch) -> None:
        await self._send_all(self.dead.get_topic_name(), [
            (dl["dl_id"].encode(), orjson.dumps(deadletter_message(dl)), None) for dl in batch.dead])
        await self._send_all(self.findings.get_topic_name(), [
            ((f["group_id"] or f["org_id"]).encode(), orjson.dumps(f), None) for f in batch.findings])
        await self.publish_alerts([a for a in batch.alerts if a["alert_id"] not in batch.early])
        # half the broker's limit per envelope: headroom for the record's own framing
        limit = self.cfg.kafka.max_message_bytes // 2
        await self._send_all(self.events.get_topic_name(), [
            (key, value, partition) for partition, key, value in envelopes(batch.forward, self._partition_of, limit)],
            [(FORWARD_HEADER, b"forward")])
        await self.app.producer.flush()  # acknowledged before the rows that explain them are written

    async def publish_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Hand alerts to the producer (acknowledged at the next `publish`'s flush); keyed by
        channel: one notifier holds a channel, so its budget is kept in one place."""
        await self._send_all(self.alerts.get_topic_name(),
                             [(a["channel"].encode(), orjson.dumps(a), None) for a in alerts])

    def snapshot_state(self) -> StateSnapshot:
        return {name: snap for name, store in self.stores.items() if (snap := store.snapshot())}

    def state_changed(self) -> bool:
        return any(store.dirty for store in self.stores.values())

    async def save_state(self, snapshot: StateSnapshot) -> None:
        for name, keys in snapshot.items():
            await self._send_all(*self.stores[name].changelog(keys))
        await self.app.producer.flush()

    async def commit(self, offsets: dict[TP, int]) -> None:
        # Private: Faust's public commit follows acked messages, which this worker does not use.
        consumer: Any = self.app.consumer
        await consumer._commit_offsets({FaustTP(t, p): o for (t, p), o in offsets.items()})  # noqa: SLF001

    async def progress(self, offsets: dict[TP, int], times: dict[TP, int]) -> None:
        await asyncio.to_thread(self.board.record, offsets, times)

    async def ticked(self, reached: dict[int, dict[str, int]]) -> None:
        await asyncio.to_thread(self.ticks.record, reached)

    async def settled(self) -> dict[str, int]:
        """How far each stage fed from other partitions may tick (pipeline/delivery/settled.py)."""
        name = self.events.get_topic_name()
        parts = list(range(self.cfg.kafka.partitions))
        progress, ends, starts = await asyncio.to_thread(self.board.read, name, parts)
        forwarded = settled(progress, ends, starts, int(self.cfg.worker.timer_grace_seconds * 1000))
        ticked = await asyncio.to_thread(self.ticks.read, parts, [name for name, _ in self.stages])
        return stage_bounds(forwarded, ticked, parts, self.stages)

    async def seek(self, tp: TP, offset: int) -> None:
        # seek_wait, not seek: Faust's seek calls aiokafka from this thread while the consumer
        # thread fetches (measured: a KeyError inside aiokafka's fetcher crashed the worker);
        # seek_wait runs in the consumer's thread and resets Faust's read offset too.
        await self.app.consumer.seek_wait({FaustTP(*tp): offset})

    def owned(self) -> set[int]:
        name = self.events.get_topic_name()
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == name}

    async def highwaters(self, partitions: Collection[int]) -> dict[TP, int | None]:
        """The partitions' end offsets, asked of the broker now. Not `Consumer.highwater`: that is
        the last fetch's figure, stale for a partition that was owned before and has just come
        back (measured: deadlines fired before the answers in the log were read)."""
        name = self.events.get_topic_name()
        ends = await self.app.consumer.highwaters(*(FaustTP(name, p) for p in partitions))
        return {(name, p): ends.get(FaustTP(name, p)) for p in partitions}


def faust_worker(app: faust.App, level: str) -> faust.Worker:
    """Faust's worker without its terminal spinner: for the spinner, at levels of warning and above
    (ours by default), Faust sets the root logger to DEBUG, and every debug call of the Kafka client
    then built a log record only for the handler to drop it (4% of the worker's CPU in
    bench/bench_alerts.py, most of it aiokafka's line per record sent)."""
    worker = faust.Worker(app, loglevel=level.upper(), quiet=True)
    worker.spinner = None
    return worker


def register(app: QunguardApp, cfg: Config) -> DeliveryPath:
    backend = connect(cfg.clickhouse.url)
    migrate(backend)
    policy = load_policy(cfg.policy.file)
    policy.check_channels(cfg.notifier.channels)  # a route to a channel nobody configured stops here
    engine = Engine(policy)
    stores = create_stores(app, [d.name for d in engine.detectors], cfg.kafka.partitions)
    engine.stores = dict(stores)
    processor = Processor(cfg, engine)
    ports = FaustPorts(app, cfg, stores)
    ports.stages = [(d.name, bool(getattr(d, "settles", False))) for d in engine.detectors]
    sink = ClickHouseSink(backend, cfg.sink, timer_topic=processor.timer_topic)
    def fatal(exc: BaseException) -> None:
        asyncio.ensure_future(app.crash(exc))  # Faust stops the worker; a restart reads from the commit

    metrics = WorkerMetrics(sink_retries=lambda: sink.retries)
    path = DeliveryPath(processor, sink, ports, on_fatal=fatal, observer=metrics)
    indexed: set[int] = set()  # partitions whose recovered state is in the engine's timer index
    topic_name = ports.events.get_topic_name()

    async def before_stop() -> None:
        stored = await path.close(SHUTDOWN_SECONDS)
        log.info("stopped: %s", "everything taken was stored" if stored else "the last write is read again")

    app.before_stop = before_stop

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[FaustTP], **kwargs: Any) -> None:
        mine = [tp for tp in revoked if tp.topic == topic_name]
        # What was taken from these partitions is stored and committed before the new owner reads
        # them. If that cannot be done in time (ClickHouse down), this worker's memory is ahead of
        # what is stored: it stops, and a restart starts from the commits and the changelogs.
        if not await path.drain(SHUTDOWN_SECONDS):
            path.fail(RuntimeError("partitions revoked while their records could not be stored"))
            return
        async with path.lock:
            path.revoked([(tp.topic, tp.partition) for tp in mine])
            ports.board.forget([(tp.topic, tp.partition) for tp in mine])
            gone = {tp.partition for tp in mine}
            indexed.difference_update(gone)
            engine.forget(gone)

    @app.task
    async def quiet_logs() -> None:
        install_rate_limit()

    def health() -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"partitions": sorted(ports.owned()), "pending_rows": sink.pending_rows,
                                  "sink_retries": sink.retries}
        if path.broken is not None:
            detail["error"] = f"delivery stopped: {type(path.broken).__name__}: {path.broken}"
        return path.broken is None, detail

    @app.task
    async def metrics_server() -> None:
        if cfg.worker.metrics_listen:
            app.metrics_runner = await serve(cfg.worker.metrics_listen, metrics.render, health, "worker")

    @app.agent(ports.events)
    async def ingest(stream: Any) -> None:  # faust.Stream: StreamT does not declare noack()
        async for events in stream.noack().noack_take(TAKE_RECORDS, within=TAKE_SECONDS):
            await path.submit([
                Record(e.message.value, e.message.topic, e.message.partition, e.message.offset,
                       _forwarded(e.message.headers)) for e in events])

    @app.timer(interval=max(cfg.sink.batch_seconds / 2, 0.1))
    async def flush() -> None:
        if path.lock.locked():
            return  # records are being detected; their submit starts the write when it is due
        await path.flush()
        await path.seek_holes()

    @app.timer(interval=cfg.worker.timer_seconds)
    async def timers() -> None:
        """Deadlines and state release on the wall clock, the edge where it belongs. A timer waits
        while the worker is behind (consumer lag above zero): a deadline must not fire before the
        answers to it that are still in Kafka have been read."""
        if app.in_recovery or app.rebalancing or path.broken is not None:
            return  # a timer must see a group's whole state, not a changelog half read
        try:
            held = await ports.settled()  # before the end offsets below: see settled.py
            owned = ports.owned()
            unknown = [(topic_name, p) for p in owned if not path.gate.knows((topic_name, p))]
            if unknown:
                path.assigned(await ports.start_offsets(unknown))
            highs = await ports.highwaters(owned)
            metrics.set_lag(highs, path.gate.position)
            if not path.gate.caught_up(highs):
                return
            async with path.lock:
                owned = ports.owned()  # a rebalance may have come in between
                new = owned - indexed
                if new:
                    for store in stores.values():
                        store.keep_only(owned)
                    n = await asyncio.to_thread(engine.reindex, new)
                    for store in stores.values():  # a changelog read back arrives as objects
                        await asyncio.to_thread(store.pack)
                    indexed.update(new)
                    sink.expect_recovery()  # their timers may fire again what a dead worker stored
                    log.info("timer index: %d keys of partitions %s", n, sorted(new))
        except Exception as exc:  # noqa: BLE001 -- a broker away: the next interval tries again
            log.warning("timers skipped: %s: %s", type(exc).__name__, exc)
            return
        wall = int(time.time() * 1000)
        grace = int(cfg.worker.timer_grace_seconds * 1000)
        bounds = path.event_clock.bounds(wall, grace, owned)  # event time while producers send
        await path.tick(max(bounds.values(), default=wall - grace), owned, held, bounds)

    return path


def run_worker(cfg: Config) -> int:
    """`qunguard worker` (the `qunguard.commands` entry point `worker`)."""
    from pipeline.kafka import ensure_topics

    # The policy first: a bad policy is one line at once, not after waiting for an absent broker.
    load_policy(cfg.policy.file).check_channels(cfg.notifier.channels)
    ensure_topics(cfg)
    app = create_app(cfg)
    tune_gc()
    # `kill -USR1 <pid>` prints every thread's stack to the log: how to see what a stuck worker waits on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    worker = faust_worker(app, cfg.worker.log_level)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # Faust's way out, also after a clean stop
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    # Stopped: what was taken is stored and committed (before_stop). Leave without the C++ exit
    # handlers: chDB's can deadlock on a mutex at exit (seen in bench/bench_pipeline.py: a worker
    # alive a minute after "Closing event loop", gdb in __run_exit_handlers → chDB).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _forwarded(headers: Any) -> bool:
    """Whether the record was forwarded by qunguard (FORWARD_HEADER), as Faust hands headers over."""
    if not headers:
        return False
    items = headers.items() if isinstance(headers, dict) else headers
    return any(k == FORWARD_HEADER for k, _ in items)
