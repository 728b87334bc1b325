"""The order step: each partition's records reach the detectors in offset order, each once.

Measured with Faust and a changelog being recovered: the consumer can deliver the first records of
a partition, skip several hundred offsets (they never reach the agent) and later deliver records
twice; an agent that crashed and was restarted by Faust loses what its take held. Detectors that
saw a record out of order, or twice, would count it wrongly, and a commit that follows "the
highest record seen" would move past records never read.

So the worker keeps its own account per partition, starting at the offset committed in Kafka:
- a record at the expected offset is admitted and the expected offset moves on;
- a record below it was admitted before (a redelivery) and is dropped;
- a record above it is behind a hole: it is dropped too, and the partition is sought back to the
  expected offset (again every `SEEK_AGAIN_SECONDS` until the hole fills, since records already
  fetched can overtake a seek). The events topic is neither compacted nor transactional, so its
  offsets are consecutive; if a hole has not filled after `GIVE_UP_SEEKS` seeks that the consumer
  answered with later records, the offsets do not exist (retention, transaction markers) and the
  gate moves on, with an error in the log.
Commits then only ever cover records that were admitted and stored: the batch's next offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger("qunguard.delivery")

TP = tuple[str, int]  # topic, partition
SEEK_AGAIN_SECONDS = 3.0
GIVE_UP_SEEKS = 10


@dataclass
class _Partition:
    expected: int | None  # the next offset to admit; None: the first record seen (nothing committed)
    hole_since: float | None = None
    seeks: int = 0
    last_seek: float = 0.0
    beyond: int | None = None  # the lowest offset seen behind the current hole
    fetched: bool = False  # a record behind the hole arrived since the last seek (the consumer reads)


@dataclass
class OrderGate:
    clock: Callable[[], float] = time.monotonic
    parts: dict[TP, _Partition] = field(default_factory=dict)
    dropped: int = 0  # records dropped as redelivered or behind a hole (a counter for operators)

    def knows(self, tp: TP) -> bool:
        return tp in self.parts

    def assign(self, tp: TP, start: int | None) -> None:
        """Start a partition at its committed offset (None: nothing committed, take the first seen)."""
        self.parts[tp] = _Partition(start)

    def revoke(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self.parts.pop(tp, None)

    def admit(self, tp: TP, offset: int) -> bool:
        p = self.parts[tp]
        if p.expected is None:
            p.expected = offset
        if offset == p.expected:
            p.expected += 1
            if p.hole_since is not None:
                p.hole_since, p.seeks, p.beyond = None, 0, None
            return True
        self.dropped += 1
        if offset > p.expected:
            if p.hole_since is None:
                p.hole_since = self.clock()
                log.warning("%s:%d: offset %d arrived before %d; reading from %d again",
                            tp[0], tp[1], offset, p.expected, p.expected)
            p.beyond = offset if p.beyond is None else min(p.beyond, offset)
            p.fetched = True
        return False

    def seeks(self) -> dict[TP, int]:
        """Partitions to seek back to their expected offset now."""
        now = self.clock()
        out = {}
        for tp, p in self.parts.items():
            if p.hole_since is None or p.expected is None or now - p.last_seek < SEEK_AGAIN_SECONDS:
                continue
            # Only seeks answered by records count towards giving up: a paused partition (recovery,
            # a broker restart) proves nothing about the offsets.
            if p.seeks >= GIVE_UP_SEEKS and p.beyond is not None:
                log.error("%s:%d: offsets %d..%d never arrived after %d seeks; they do not exist in the "
                          "log (retention or transaction markers): moving on", tp[0], tp[1], p.expected,
                          p.beyond - 1, p.seeks)
                p.expected, p.hole_since, p.seeks, p.beyond = p.beyond, None, 0, None
                out[tp] = p.expected
                continue
            if p.fetched:
                p.seeks += 1
            p.fetched = False
            p.last_seek = now
            out[tp] = p.expected
        return out

    def position(self, tp: TP) -> int | None:
        """The next offset this worker will admit on `tp`."""
        p = self.parts.get(tp)
        return p.expected if p is not None else None

    def caught_up(self, highwaters: dict[TP, int | None]) -> bool:
        """Every owned partition admitted up to its high watermark (consumer lag zero). A partition
        whose high watermark is not known yet counts as behind."""
        for tp, high in highwaters.items():
            if high is None:
                return False
            position = self.position(tp)
            if high > 0 and (position is None or position < high):
                return False
        return True
