"""How far each partition's timers may go: its own event time while its producers send, the wall
clock once it is quiet.

A deadline decided at the wall clock while the worker is caught up with a producer that is still
sending counts every answer not yet produced as missing. That is right for live traffic, whose
event times are the wall clock's, and wrong for traffic that arrives later than it happened (an
archive bridge catching up, a backlog after an outage, a test's recorded traffic): a notice from
last week "fires" before the answers to it, produced a second later, are read, and the worker's
findings are no longer replay's. Flink's answer is the one taken here: per partition, timers go no
further than the latest event time read from it less the allowed lateness (`timer_grace_seconds`),
and a partition with nothing read for that long is idle and follows the wall clock (less the same
grace), so a quiet group's deadline still fires on time. Event times are capped at the wall clock:
one future-dated event must not fire every deadline at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from pipeline.delivery.settled import EARLIEST


class EventClock:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.marks: dict[int, int] = {}  # per partition, the latest producer event time read
        self.heard: dict[int, float] = {}  # per partition, when (clock) a producer's event was last read

    def assigned(self, partition: int) -> None:
        """A partition starts busy: the grace passes before its timers follow the wall clock."""
        self.heard[partition] = self.clock()

    def read(self, event_times: Mapping[int, int]) -> None:
        now = self.clock()
        for p, ts in event_times.items():
            if ts > self.marks.get(p, EARLIEST):
                self.marks[p] = ts
            self.heard[p] = now

    def bounds(self, wall_ms: int, grace_ms: int, partitions: Iterable[int]) -> dict[int, int]:
        """Per partition, the moment its timers may tick to."""
        live = wall_ms - grace_ms
        now = self.clock()
        out = {}
        for p in partitions:
            mark = self.marks.get(p)
            heard = self.heard.get(p)
            if heard is None or (now - heard) * 1000 >= grace_ms:  # idle: the wall clock's moment
                out[p] = live if mark is None else max(live, min(mark, wall_ms))
            else:
                out[p] = EARLIEST if mark is None else min(mark, wall_ms) - grace_ms
        return out
