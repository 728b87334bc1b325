"""ClickHouse sink: batch by rows and time, write, and only then let the caller commit offsets.

Exactly once in ClickHouse, the way Arroyo-style consumers get it on an at-least-once log:
- Offsets are committed only after the rows are written, so nothing is lost when a worker dies.
- What a dead worker wrote but did not commit comes back after the restart. Every row carries its
  Kafka position (src_topic, src_partition, src_offset), so the first time this process sees a
  partition (or sees it go backwards, after a rebalance) it asks ClickHouse which keys it already
  holds from that offset on and drops them.
- A bounded cache of recently written keys (event_id, finding_id) drops events sent twice.
- The tables are ReplacingMergeTree on the same keys: a duplicate that slips past both (an insert
  that succeeded but whose acknowledgement was lost) collapses at the next merge.
While ClickHouse is down, `write` retries with exponential backoff and does not return; the agent
keeps at most one write in flight, so it stops taking records and Faust pauses the partitions:
memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from pipeline.config import SinkConfig
from pipeline.processor import Batch
from pipeline.sink.backends import Backend, BackendError, quote
from schemas.rows import TABLES

log = logging.getLogger("qunguard.sink")


class SinkStopped(RuntimeError):
    """The worker is stopping while ClickHouse is still unreachable; nothing was committed."""


class ClickHouseSink:
    def __init__(self, backend: Backend, cfg: SinkConfig) -> None:
        self.backend = backend
        self.cfg = cfg
        self.pending: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.pending_rows = 0
        self.oldest: float | None = None
        self.retries = 0
        self._recent: dict[str, OrderedDict[str, None]] = {t: OrderedDict() for t in TABLES}
        self._last_offset: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()

    # --- admission: decide which rows are new -------------------------------------------------

    def admit(self, batch: Batch) -> Batch:
        """Return the part of `batch` not yet stored; queue its rows. Blocks (retrying) on recovery."""
        stored = self._recover(batch)
        out = Batch(forward=batch.forward)  # forwarded facts are idempotent where they land
        for table, rows in batch.rows.items():
            recent = self._recent[table]
            seen_here = stored.get(table, set())
            kept = out.rows[table]
            for row in rows:
                key = row[0]
                if key in seen_here or key in recent:
                    continue
                recent[key] = None
                kept.append(row)
            while len(recent) > self.cfg.dedupe_cache:
                recent.popitem(last=False)
        kept_findings = {r[0] for r in out.rows["findings"]}
        out.findings = [f for f in batch.findings if f["finding_id"] in kept_findings]
        # An alert goes out with the findings it reports, not again for findings already stored.
        kept_notices = {(f["group_id"], f["msg_id"]) for f in out.findings}
        out.alerts = [a for a in batch.alerts if (a["group_id"], a["msg_id"]) in kept_notices]
        kept_dead = {r[0] for r in out.rows["deadletter"]}
        out.dead = [d for d in batch.dead if d["dl_id"] in kept_dead]
        for table, rows in out.rows.items():
            self.pending[table].extend(rows)
            self.pending_rows += len(rows)
        if self.oldest is None and self.pending_rows:
            self.oldest = time.monotonic()
        return out

    def _recover(self, batch: Batch) -> dict[str, set[str]]:
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        for rows in batch.rows.values():
            for row in rows:
                tp, off = (row[-4], row[-3]), row[-2]
                if off < first.get(tp, off + 1):
                    first[tp] = off
                if off > last.get(tp, -1):
                    last[tp] = off
        check = {tp: off for tp, off in first.items()
                 if tp not in self._last_offset or off <= self._last_offset[tp]}
        for tp, off in last.items():
            self._last_offset[tp] = max(off, self._last_offset.get(tp, -1))
        stored: dict[str, set[str]] = {}
        if not check:
            return stored
        db = self.backend.database
        for table, columns in TABLES.items():
            conds = " OR ".join(
                f"(src_topic = '{quote(t)}' AND src_partition = {int(p)} AND src_offset >= {int(o)})"
                for (t, p), o in check.items())
            sql = f"SELECT {columns[0]} FROM {db}.{table} WHERE {conds}"
            stored[table] = {r[0] for r in self._retry(lambda sql=sql: self.backend.query(sql))}
        log.info("recovered %s: %d rows already stored", sorted(check), sum(map(len, stored.values())))
        return stored

    # --- writing ------------------------------------------------------------------------------

    def due(self) -> bool:
        if not self.pending_rows:
            return False
        return (self.pending_rows >= self.cfg.batch_rows
                or time.monotonic() - (self.oldest or 0) >= self.cfg.batch_seconds)

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
            self._retry(lambda t=table, r=rows, c=columns: self.backend.insert(t, c, r))
            n += len(rows)
            # Emptied per table, so a retry after a failure in a later table never rewrites this one.
            taken[table] = []
        return n

    def flush(self) -> int:
        """Write everything pending, here and now; return the number of rows."""
        return self.write(self.take())

    def _retry(self, fn):
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
