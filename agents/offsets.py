"""Which records the agent has received and stored, per partition: what to commit, what to re-read.

Measured with tables (a changelog read at start-up): when stream records were fetched while the
changelog was being recovered, Faust delivered the first few hundred records of each partition,
then jumped several hundred offsets ahead (the skipped records never reached the agent; re-fetched,
they were dropped as already read) and later delivered the last records twice. Its commit, which
follows the acknowledged offsets, then stalls on the hole (robinhood/faust#625 is the same
symptom). So the worker keeps its own account:
- `stored` gives, per partition, the offset below which every record has been written, which the
  agent commits after each write;
- `holes` names the partitions with records stored beyond a hole (the events topic is neither
  compacted nor transactional, so its offsets are consecutive: a hole is a loss) and the offset to
  seek back to; the agent seeks, again every few seconds until the hole fills, since records
  already fetched can overtake a seek.
Re-delivered records are harmless: the sink drops rows it holds, detector state skips records it
has applied.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from faust.types import TP

SEEK_AGAIN_SECONDS = 3.0  # records already fetched can overtake a seek; try again until the hole fills


class StoredOffsets:
    def __init__(self) -> None:
        self.next: dict[TP, int] = {}  # per partition: the lowest offset not yet stored
        self.ahead: dict[TP, set[int]] = {}  # stored offsets above it: in-order records leave none but a hole
        self.sought: dict[TP, float] = {}

    def stored(self, positions: Iterable[tuple[TP, int]]) -> dict[TP, int]:
        """Record stored offsets; return the partitions whose commit point moved, and where to."""
        touched = set()
        for tp, offset in positions:
            nxt = self.next.setdefault(tp, offset)  # the first record after assignment: the committed one
            if offset >= nxt:
                self.ahead.setdefault(tp, set()).add(offset)
                touched.add(tp)
        moved = {}
        for tp in touched:
            ahead, nxt = self.ahead[tp], self.next[tp]
            start = nxt
            while nxt in ahead:
                ahead.discard(nxt)
                nxt += 1
            if nxt != start:
                self.next[tp] = moved[tp] = nxt
        return moved

    def holes(self) -> dict[TP, int]:
        """Partitions with records stored beyond a hole, and the offset to seek back to."""
        now = time.monotonic()
        out = {}
        for tp, ahead in self.ahead.items():
            if ahead and now - self.sought.get(tp, 0.0) > SEEK_AGAIN_SECONDS:
                out[tp] = self.next[tp]
                self.sought[tp] = now
        return out

    def forget(self, tps: Iterable[TP]) -> None:
        """A revoked partition starts afresh from its committed offset when it comes back."""
        for tp in tps:
            for known in (self.next, self.ahead, self.sought):
                known.pop(tp, None)
