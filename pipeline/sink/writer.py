"""ClickHouse sink: batch by rows and time, write, and only then let the caller commit offsets.

Exactly once in ClickHouse, the way Arroyo-style consumers get it on an at-least-once log:
- Offsets are committed only after the rows are written, so nothing is lost when a worker dies.
- What a dead worker wrote but did not commit comes back after the restart. Every row carries its
  Kafka position (src_topic, src_partition, src_offset), so the first time this process sees a
  partition (or sees it go backwards, after a rebalance) it asks ClickHouse which keys it already
  holds from that offset on, and drops those rows until the partition is past the last of them.
- Timer rows (deadlines, the member stage) carry the timer's moment as their offset, which a
  restarted worker does not repeat; for `RECOVER_SECONDS` after the sink starts or a partition's
  recovered state is indexed for its timers, their keys are checked in ClickHouse by value.
- A bounded cache of recently written keys (event_id, finding_id) drops events sent twice.
- The tables are ReplacingMergeTree on the same keys: a duplicate that slips past all of these (an
  insert that succeeded but whose acknowledgement was lost) collapses at the next merge.
While ClickHouse is down, `write` retries with exponential backoff until it succeeds or `stop()` is
called; the delivery path keeps one write in flight, so it stops taking records and Faust pauses
the partitions: memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from functools import partial
from typing import TypeVar

from pipeline.config import SinkConfig
from pipeline.processor import Batch
from pipeline.sink import queries
from pipeline.sink.backends import Backend, BackendError
from schemas.rows import TABLES, Source

log = logging.getLogger("qunguard.sink")
T = TypeVar("T")
RECOVER_SECONDS = 120.0
KEYS_PER_QUERY = 2_000

TP = tuple[str, int]


class SinkStopped(RuntimeError):
    """The worker is stopping while ClickHouse is still unreachable; nothing was committed."""


class ClickHouseSink:
    def __init__(self, backend: Backend, cfg: SinkConfig, timer_topic: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.cfg = cfg
        self.timer_topic = timer_topic
        self.clock = clock
        self.pending: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.pending_rows = 0
        self.oldest: float | None = None
        self.retries = 0
        self._recent: dict[str, OrderedDict[str, None]] = {t: OrderedDict() for t in TABLES}
        self._last_offset: dict[TP, int] = {}
        # Per partition met again after a restart: the last offset ClickHouse holds from it, and the
        # keys it holds from the recovery point on, per table.
        self._recovered: dict[TP, tuple[int, dict[str, set[str]]]] = {}
        self._check_timer_until = clock() + RECOVER_SECONDS
        self._stop = threading.Event()

    def forget(self, tps: Collection[TP]) -> None:
        """Partitions revoked: when one comes back, what others stored meanwhile is checked again."""
        for tp in tps:
            self._last_offset.pop(tp, None)
            self._recovered.pop(tp, None)

    def expect_recovery(self) -> None:
        """A partition's recovered state is indexed: timer rows it fires again are checked by key."""
        self._check_timer_until = self.clock() + RECOVER_SECONDS

    # --- admission: decide which rows are new -------------------------------------------------

    def admit(self, batch: Batch) -> Batch:
        """Return the part of `batch` not yet stored; queue its rows. Blocks (retrying) on recovery."""
        self._recover(batch)
        timer_stored = self._timer_stored(batch)
        recovered = self._recovered
        out = Batch(forward=batch.forward, early=batch.early)  # forwarded facts are idempotent where they land
        for table, rows in batch.rows.items():
            recent = self._recent[table]
            kept = out.rows[table]
            held = timer_stored.get(table, ())
            for row in rows:
                key = row[0]
                if key in recent or key in held:
                    continue
                if recovered:
                    rec = recovered.get((row[-4], row[-3]))
                    if rec is not None and row[-2] <= rec[0] and key in rec[1][table]:
                        continue
                recent[key] = None
                kept.append(row)
            while len(recent) > self.cfg.dedupe_cache:
                recent.popitem(last=False)
        kept_findings = {r[0] for r in out.rows["findings"]}
        out.findings = [f for f in batch.findings if f["finding_id"] in kept_findings]
        # An alert goes out once its row is new, not again for one already stored.
        kept_alerts = {r[0] for r in out.rows["alerts"]}
        out.alerts = [a for a in batch.alerts if a["alert_id"] in kept_alerts]
        kept_dead = {r[0] for r in out.rows["deadletter"]}
        out.dead = [d for d in batch.dead if d["dl_id"] in kept_dead]
        for table, rows in out.rows.items():
            self.pending[table].extend(rows)
            self.pending_rows += len(rows)
        if self.oldest is None and self.pending_rows:
            self.oldest = self.clock()
        return out

    def unseen(self, src: Source, alert_id: str) -> bool:
        """Whether the rows of the record at `src` are certainly not stored yet, nor this alert: the
        partition is past everything ClickHouse held of it when this process met it, and the record
        lies after all this process admitted from it. Only then may its alerts be published while
        the rest of its batch is detected (an alert already stored is not published again, admit)."""
        tp = (src.topic, src.partition)
        last = self._last_offset.get(tp)
        return (last is not None and src.offset > last and tp not in self._recovered
                and alert_id not in self._recent["alerts"])

    def _recover(self, batch: Batch) -> None:
        first: dict[TP, int] = {}
        last: dict[TP, int] = {}
        for rows in batch.rows.values():
            for row in rows:
                tp, off = (row[-4], row[-3]), row[-2]
                if tp[0] == self.timer_topic:
                    continue
                if off < first.get(tp, off + 1):
                    first[tp] = off
                if off > last.get(tp, -1):
                    last[tp] = off
        for tp, off in first.items():
            rec = self._recovered.get(tp)
            if rec is not None and off > rec[0]:
                del self._recovered[tp]  # past everything a previous worker had stored
        check = {tp: off for tp, off in first.items()
                 if tp not in self._last_offset or off <= self._last_offset[tp]}
        for tp, off in last.items():
            self._last_offset[tp] = max(off, self._last_offset.get(tp, -1))
        for tp, off in check.items():
            held: dict[str, set[str]] = {}
            top = -1
            for table, columns in TABLES.items():
                sql = queries.stored_since(self.backend.database, table, columns[0], tp[0], tp[1], off)
                found = self._retry(partial(self.backend.query, sql))
                held[table] = {r[0] for r in found}
                top = max([top, *(int(r[1]) for r in found)])
            if top >= off:
                self._recovered[tp] = (top, held)
                log.info("recovered %s:%d from offset %d: %d rows already stored, up to offset %d",
                         tp[0], tp[1], off, sum(map(len, held.values())), top)

    def _timer_stored(self, batch: Batch) -> dict[str, set[str]]:
        """Keys of timer rows already in ClickHouse, while a restart may fire them again."""
        if self.timer_topic is None or self.clock() > self._check_timer_until:
            return {}
        out: dict[str, set[str]] = {}
        for table, rows in batch.rows.items():
            keys = [r[0] for r in rows if r[-4] == self.timer_topic and r[0] not in self._recent[table]]
            held: set[str] = set()
            for i in range(0, len(keys), KEYS_PER_QUERY):  # the server's max_query_size is 256 KiB
                sql = queries.keys_stored(self.backend.database, table, TABLES[table][0], keys[i:i + KEYS_PER_QUERY])
                held.update(r[0] for r in self._retry(partial(self.backend.query, sql)))
            if held:
                out[table] = held
        return out

    # --- writing ------------------------------------------------------------------------------

    def due(self) -> bool:
        if not self.pending_rows:
            return False
        return (self.pending_rows >= self.cfg.batch_rows
                or self.clock() - (self.oldest or 0) >= self.cfg.batch_seconds)

    def take(self) -> dict[str, list[tuple]]:
        """Hand over everything pending (to `write`, possibly in another thread); start afresh."""
        taken, self.pending = self.pending, {t: [] for t in TABLES}
        self.pending_rows = 0
        self.oldest = None
        return taken

    def write(self, taken: dict[str, list[tuple]]) -> int:
        """Write taken rows; return how many. Retries until written or stopped."""
        n = 0
        for table, rows in taken.items():
            if not rows:
                continue
            columns = TABLES[table]
            self._retry(partial(self.backend.insert, table, columns, rows))
            n += len(rows)
            # Emptied per table, so a retry after a failure in a later table never rewrites this one.
            taken[table] = []
        return n

    def flush(self) -> int:
        """Write everything pending, here and now; return the number of rows."""
        return self.write(self.take())

    def _retry(self, fn: Callable[[], T]) -> T:
        delay = 0.2
        while True:
            try:
                return fn()
            except BackendError as exc:
                if self._stop.is_set():
                    raise SinkStopped(str(exc)) from exc
                self.retries += 1
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.cfg.max_backoff_seconds)

    def stop(self) -> None:
        self._stop.set()
