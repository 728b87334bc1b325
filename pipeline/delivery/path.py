"""The delivery path of a worker, as small named steps (getsentry/arroyo's strategies are the model):

    order → detect → collect → publish → write (one in flight) → save state → commit

- **order** (`OrderGate`): each partition's records in offset order, each once.
- **detect** (`Processor.process`, in a thread so the event loop and its heartbeats keep going):
  decode, validate, tokenize, run the engine; poison input becomes dead letters, never an error.
- **collect** (`ClickHouseSink.admit`): drop rows already stored (after a restart), queue the rest.
- **publish** (`Ports.publish`): dead letters, findings, alerts and forwarded facts go to their
  topics and are acknowledged, before their rows are written: a crash in between repeats them
  (consumers key on dl_id / finding_id / alert_id), it never loses them. An urgent alert is handed
  to the producer as soon as its event is detected (`Ports.publish_alerts`), not after the rest of
  its batch, when the sink knows its rows are not stored yet (`Sink.unseen`): the copies a crash
  can make are the same as before, and the publish step's acknowledgement covers it too.
- **write** (`ClickHouseSink.write`, in a thread): one write in flight beside the detection of the
  next records; a second write waits for the first, which is the backpressure.
- **save state** (`Ports.save_state`): the detector state as it was after those records, to the
  changelog, only once their rows are stored, so a restart never skips a record whose rows were
  not written (engine.py explains why a record at or before a key's position is then skipped).
  It is serialised when the write is cut, under the lock that keeps detection out: a key changed
  by several batches of one write is serialised once.
- **commit** (`Ports.commit`): the next offsets of the records stored; then each partition's
  progress (`Ports.progress`: that offset and the latest event time stored from it), which tells
  the stages fed from other partitions how far they may tick (settled.py). Progress is advisory:
  if it cannot be recorded, those stages wait; nothing else does.

Timers take the same path without offsets. Nothing here imports Kafka, Faust or ClickHouse: the
edges come in as `Ports` and a sink, the clock is injected, and each step is tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.delivery.clock import EventClock
from pipeline.delivery.order import TP, OrderGate
from pipeline.delivery.settled import EARLIEST
from pipeline.engine import Settled
from pipeline.packed_store import Snapshot
from pipeline.processor import Batch, Processor
from pipeline.sink.writer import SinkStopped
from schemas.rows import Source

log = logging.getLogger("qunguard.delivery")

StateSnapshot = dict[str, Snapshot]  # per store


@dataclass(frozen=True, slots=True)
class Record:
    value: bytes | None
    topic: str
    partition: int
    offset: int
    internal: bool = False  # produced by qunguard itself (a forwarded fact), not by a producer

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


class Sink(Protocol):
    def admit(self, batch: Batch) -> Batch: ...
    def unseen(self, src: Source, alert_id: str) -> bool: ...
    def due(self) -> bool: ...
    def take(self) -> dict[str, list[tuple[Any, ...]]]: ...
    def write(self, taken: dict[str, list[tuple[Any, ...]]]) -> int: ...
    def stop(self) -> None: ...
    def forget(self, tps: Collection[TP]) -> None: ...

    @property
    def pending_rows(self) -> int: ...


class Observer(Protocol):
    """What the path tells the process's metrics (pipeline/metrics.py): what it stored."""

    def admitted(self, batch: Batch, records: int) -> None: ...
    def written(self, seconds: float, rows: Mapping[str, int]) -> None: ...


class Ports(Protocol):
    """What the edges (Kafka through Faust, in agents/) do for the path."""

    async def start_offsets(self, tps: Collection[TP]) -> dict[TP, int | None]: ...
    async def publish(self, batch: Batch) -> None: ...
    async def publish_alerts(self, alerts: list[dict[str, Any]]) -> None: ...
    def snapshot_state(self) -> StateSnapshot: ...
    def state_changed(self) -> bool: ...
    async def save_state(self, snapshot: StateSnapshot) -> None: ...
    async def commit(self, offsets: dict[TP, int]) -> None: ...
    async def progress(self, offsets: dict[TP, int], times: dict[TP, int]) -> None: ...
    async def ticked(self, reached: dict[int, dict[str, int]]) -> None: ...
    async def seek(self, tp: TP, offset: int) -> None: ...


@dataclass
class _Unit:
    """What one write carries: the rows taken from the sink, the state after them, the offsets."""

    rows: dict[str, list[tuple[Any, ...]]]
    state: StateSnapshot
    offsets: dict[TP, int]
    times: dict[TP, int]  # the latest event time of a producer's event, per partition
    records: int


class DeliveryPath:
    def __init__(self, processor: Processor, sink: Sink, ports: Ports, clock: Callable[[], float] = time.monotonic,
                 on_fatal: Callable[[BaseException], None] | None = None, observer: Observer | None = None) -> None:
        self.processor = processor
        self.observer = observer
        self.sink = sink
        self.ports = ports
        self.clock = clock
        self.gate = OrderGate(clock)
        self.event_clock = EventClock(clock)  # how far each partition's timers may go (clock.py)
        self.lock = asyncio.Lock()  # detection and timers see the state one at a time
        self.on_fatal = on_fatal or (lambda exc: None)
        self.broken: BaseException | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._offsets: dict[TP, int] = {}
        self._times: dict[TP, int] = {}
        self._records = 0
        self._closing = False

    # --- the steps ----------------------------------------------------------------------------

    async def submit(self, records: Sequence[Record]) -> None:
        """Take records from the consumer through every step up to a write being started."""
        if self._closing:
            return
        async with self.lock:
            if self._closing:
                return
            unknown = {r.tp for r in records if not self.gate.knows(r.tp)}
            if unknown:
                self.assigned(await self.ports.start_offsets(unknown))
            admitted = [r for r in records if self.gate.admit(r.tp, r.offset)]
            if admitted:
                try:
                    early = _Early(self.sink, self.ports, asyncio.get_running_loop())
                    batch = await asyncio.to_thread(self.detect, admitted, early)
                    batch.early = await early.handed()
                    await self._after_detect(batch, _ends(admitted), len(admitted))
                except BaseException as exc:
                    # The gate has moved past these records: nothing after them may be committed
                    # by this process any more. A restart reads them again from the last commit.
                    self.fail(exc)
                    raise
        await self.seek_holes()

    def detect(self, records: Sequence[Record], early: _Early | None = None) -> Batch:
        return self.processor.process(
            ((r.value, Source(r.topic, r.partition, r.offset), r.internal) for r in records),
            early.urgent if early is not None else None)

    async def tick(self, now: int, partitions: Collection[int], settled: Settled = None,
                   bounds: Mapping[int, int] | None = None) -> Batch:
        """Timers at `now` for the partitions this worker owns, through the same steps; each
        partition no further than its `bounds` (clock.py), the stages fed from other partitions no
        further than `settled` (settled.py)."""
        async with self.lock:
            if self._closing:
                return Batch()
            try:
                batch = await asyncio.to_thread(self.processor.tick, partitions, now, settled, bounds)
                await self._after_detect(batch, {}, 0, force=len(batch) > 0 or bool(batch.forward))
            except BaseException as exc:
                self.fail(exc)
                raise
            if self._closing:
                return batch
        # What this tick forwarded is acknowledged (published) and stored: the stages it feeds may
        # now go as far as it went (settled.py). Advisory like progress: if not recorded, they wait.
        reached = {p: {name: t for name, t in stages.items() if t > EARLIEST}
                   for p, stages in self.processor.engine.reach(now, partitions, settled, bounds).items()}
        try:
            await self.ports.ticked({p: r for p, r in reached.items() if r})
        except Exception as exc:  # noqa: BLE001
            log.warning("timer progress not recorded (%s: %s); the ladder and alerts wait for the next",
                        type(exc).__name__, exc)
        return batch

    def fail(self, exc: BaseException) -> None:
        """Stop the path: nothing is written or committed any more, and the edge stops the worker
        (a shutdown's cancellation, or the sink stopped by it, is no failure to report)."""
        first = self.broken is None
        self._closing = True
        if first:
            self.broken = exc
        if first and not isinstance(exc, (asyncio.CancelledError, SinkStopped)):
            log.critical("delivery stopped: %s: %s", type(exc).__name__, exc)
            self.on_fatal(exc)

    async def _after_detect(self, batch: Batch, offsets: dict[TP, int], records: int, force: bool = False) -> None:
        for tp, t in batch.event_time.items():
            self._times[tp] = max(t, self._times.get(tp, t))
        self.event_clock.read({tp[1]: t for tp, t in batch.event_time.items()})
        batch = await asyncio.to_thread(self.sink.admit, batch)  # collect
        await self.ports.publish(batch)
        if self.observer is not None:
            self.observer.admitted(batch, records)
        self._offsets.update(offsets)
        self._records += records
        await self._maybe_write(force)

    async def flush(self) -> None:
        """Start a write if the sink is due (a timer calls this when no records come)."""
        async with self.lock:
            await self._maybe_write(force=False)

    async def _maybe_write(self, force: bool) -> None:
        if self.broken is not None:
            raise self.broken  # nothing is written or committed after a failed write
        if not (self.sink.pending_rows or self._offsets or self.ports.state_changed()):
            if force:
                await self.wait_written()  # a drain: what a write in flight carries is stored too
            return
        # Due by size or age; or nothing to write at all (every row was a duplicate), which costs
        # nothing and lets the state and offsets move on.
        if not (force or self.sink.due() or not self.sink.pending_rows):
            return
        await self.wait_written()  # one write in flight
        # the state after every record and timer taken so far, whose rows and offsets go with it
        unit = _Unit(self.sink.take(), self.ports.snapshot_state(), self._offsets, self._times, self._records)
        self._offsets, self._times, self._records = {}, {}, 0
        self._inflight = asyncio.ensure_future(self._write(unit))
        if force:
            await self.wait_written()

    async def _write(self, unit: _Unit) -> None:
        began = self.clock()
        per_table = {table: len(rows) for table, rows in unit.rows.items()}
        try:
            rows = await asyncio.to_thread(self.sink.write, unit.rows)
            wrote = self.clock() - began  # ClickHouse's part, retries included
            await self.ports.save_state(unit.state)
            if unit.offsets:
                await self.ports.commit(unit.offsets)
        except BaseException as exc:
            self.fail(exc)
            raise
        if self.observer is not None:
            self.observer.written(wrote, per_table)
        # events: the producers' events among them (one raw_events row each), what throughput counts
        log.info("stored: records=%d rows=%d events=%d", unit.records, rows, per_table.get("raw_events", 0))
        if unit.offsets:
            try:
                await self.ports.progress(unit.offsets, unit.times)
            except Exception as exc:  # noqa: BLE001 -- advisory: the stages fed by forwards wait
                log.warning("progress not recorded (%s: %s); the member stage waits for the next",
                            type(exc).__name__, exc)

    async def wait_written(self) -> None:
        """Wait for the write in flight (a waiter's cancellation does not cancel the write)."""
        task = self._inflight
        if task is None:
            return
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._inflight is task:
                self._inflight = None

    async def drain(self, timeout: float) -> bool:
        """Store and commit everything taken so far, within `timeout` (a rebalance, a shutdown).
        Returns whether it all was stored; what was not is read again from the last commit."""
        async def everything() -> None:
            async with self.lock:
                await self._maybe_write(force=True)

        try:
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(everything())), timeout)
            return True
        except Exception as exc:  # noqa: BLE001 -- a timeout or a failed write: read again later
            log.warning("%s while storing what was taken; it is read again from the last commit",
                        type(exc).__name__)
            return False

    # --- edges' bookkeeping -------------------------------------------------------------------

    def assigned(self, starts: dict[TP, int | None]) -> None:
        for tp, start in starts.items():
            if not self.gate.knows(tp):
                self.gate.assign(tp, start)
                self.event_clock.assigned(tp[1])

    def revoked(self, tps: Collection[TP]) -> None:
        """Call holding `lock`, after `drain`."""
        self.gate.revoke(tps)
        self.sink.forget(tps)
        for tp in tps:
            self._offsets.pop(tp, None)
            self._times.pop(tp, None)

    async def seek_holes(self) -> None:
        """Seek back over holes; a seek that fails is tried again at the next interval."""
        for tp, offset in self.gate.seeks().items():
            try:
                await self.ports.seek(tp, offset)
            except Exception as exc:  # noqa: BLE001 -- e.g. the partition was just revoked
                log.warning("seek %s:%d to %d failed (%s); trying again", tp[0], tp[1], offset, exc)

    async def close(self, timeout: float) -> bool:
        """Stop taking records and store what was taken, within `timeout` seconds; then stop the
        sink's retries, so that a shutdown with ClickHouse down ends too."""
        self._closing = True
        stored = await self.drain(timeout)
        self.sink.stop()
        return stored


class _Early:
    """Urgent alerts of one batch, handed to the producer from the event loop while the detect
    thread goes on with the batch (an alert waited for the whole batch: up to a second at load)."""

    def __init__(self, sink: Sink, ports: Ports, loop: asyncio.AbstractEventLoop) -> None:
        self.sink = sink
        self.ports = ports
        self.loop = loop
        self.ids: set[str] = set()
        self.sends: list[asyncio.Future[None]] = []

    def urgent(self, alerts: list[dict[str, Any]], src: Source) -> None:
        """In the detect thread."""
        new = [a for a in alerts if a["alert_id"] not in self.ids and self.sink.unseen(src, a["alert_id"])]
        if new:
            self.ids.update(a["alert_id"] for a in new)
            self.loop.call_soon_threadsafe(self._send, new)

    def _send(self, alerts: list[dict[str, Any]]) -> None:
        self.sends.append(asyncio.ensure_future(self.ports.publish_alerts(alerts)))

    async def handed(self) -> set[str]:
        """Once detection is done: every send handed over (a failed one fails the batch). The
        thread's call_soon_threadsafe callbacks ran before the loop resumed the awaiting task: the
        loop runs its callbacks in order, and the thread's result came after them."""
        if self.sends:
            await asyncio.gather(*self.sends)
        return self.ids


def _ends(records: Sequence[Record]) -> dict[TP, int]:
    """The next offset of each partition after these (admitted, so in order) records."""
    out: dict[TP, int] = {}
    for r in records:
        out[r.tp] = r.offset + 1
    return out
