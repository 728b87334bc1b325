"""How far a stage fed from other partitions may tick: the moment before which every fact forwarded
to it has been published.

The member stage (pipeline/detectors/governance/member.py) gets membership facts forwarded from
every group's partition. Replay applies them in event-time order; the worker must too, even when
one of those partitions is late (its worker killed, or a rebalance), or a roster change and a
member's leaving are judged in the wrong order. Flink solves this with watermarks per source; here
each worker records, after every commit, each partition's committed offset and the latest event
time of a producer's event up to it (`Progress`). A stage fed by forwards may then tick up to

    min over the partitions with records not yet stored of (their latest event time − lateness)

Records beyond a partition's progress are assumed no more than `lateness` older than the event
time already stored from it (bounded out-of-orderness, the usual watermark heuristic); a partition
with nothing left to store does not hold anyone back (Flink's idleness). A partition with records
to store and no progress recorded yet holds everything back until it has. A worker killed between
its commit and its progress record leaves the board behind; the partition's next owner records
progress at the committed offset when it is assigned (agents/app.py), so such a partition does not
hold the stages back for good once nothing is left in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

EARLIEST = -(2**62)  # "nothing is settled yet"


@dataclass(frozen=True, slots=True)
class Progress:
    offset: int  # the committed offset (the next record to store)
    event_time: int | None  # the latest event time of a producer's event before it, if known


def settled(progress: Mapping[int, Progress], ends: Mapping[int, int], starts: Mapping[int, int],
            lateness_ms: int) -> int | None:
    """The bound for the partitions in `ends` (end offsets, read after `progress`); `starts` are
    where each log begins. None when every partition is stored to its end: no bound at all."""
    bound: int | None = None
    for p, end in ends.items():
        done = progress.get(p)
        if end <= max(done.offset if done else 0, starts.get(p, 0)):
            continue  # everything in it is stored, so forwarded
        if done is None or done.event_time is None:
            return EARLIEST
        b = done.event_time - lateness_ms
        bound = b if bound is None else min(bound, b)
    return bound


def stage_bounds(forwarded: int | None, ticked: Mapping[int, Mapping[str, int]], partitions: Iterable[int],
                 stages: Sequence[tuple[str, bool]]) -> dict[str, int]:
    """Per stage that settles (`stages`: (name, settles) in the engine's order), how far it may
    tick: no further than `forwarded` (settled() above) and than each earlier stage has ticked in
    each of `partitions` (`ticked`: the moments the workers recorded)."""
    parts = list(partitions)
    out: dict[str, int] = {}
    before: int | None = None  # the least moment an earlier stage reached, over every partition
    for name, settles in stages:
        if settles:
            bound = forwarded if before is None else before if forwarded is None else min(before, forwarded)
            if bound is not None:
                out[name] = bound
        reached = min((ticked.get(p, {}).get(name, EARLIEST) for p in parts), default=EARLIEST)
        before = reached if before is None else min(before, reached)
    return out
