"""Runs every detector over events, with state in any mutable mapping; the one place that knows
about positions, redelivery and timers, so that no detector has to.

The worker passes stores backed by Faust tables (changelog topics, keyed by group); `qunguard
replay` passes dicts. One implementation, two drivers, identical findings.

Each stored value is an envelope `[state version, the detector's state, [partition, offset, index]
of the last event applied]` (a list: every key of every detector has one, and a dict costs 100
bytes more; envelopes written as `{"v", "s", "at"}` dicts before 2026-12-03 are read as well). The
delivery path (pipeline/delivery/) hands the engine each partition's records in offset order from
the committed offset on, and the store reaches the changelog only after what the state produced
is stored. So after a crash, a record at or before a key's position is already in that key's state
and in storage: the engine skips it for that key. That is how every record is applied exactly
once, for every detector, with no guard of their own.

Timers: after every change the engine asks the detector when the key is next due and keeps that
in a heap per partition and detector; `tick(now)` visits only what is due, and a worker ticks only
the partitions it owns. A detector whose inputs are forwarded from other partitions (`settles`,
the member stage) is ticked no later than `settled`: the moment before which every partition's
forwards have been published (pipeline/delivery/settled.py), so it applies them in event-time
order as replay does, however late a restarted partition forwards them.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Iterable, Mapping, MutableMapping
from typing import Any

from pipeline.alerting.route import route
from pipeline.alerting.stage import AlertStage
from pipeline.detectors import KEEP, Context, Detector, Outcome
from pipeline.detectors.content.detector import ContentDetector
from pipeline.detectors.deadline.detector import DeadlineDetector
from pipeline.detectors.flood import FloodDetector
from pipeline.detectors.governance.group import GroupDetector
from pipeline.detectors.governance.member import MemberDetector
from pipeline.policy import Policy
from pipeline.review.ladder import FeedbackRouter, LadderStage, strike_fact

log = logging.getLogger("qunguard.engine")

# The rule families, each built from the policy.
DETECTORS: list[type] = [ContentDetector, FloodDetector, DeadlineDetector, GroupDetector, MemberDetector,
                         FeedbackRouter, LadderStage, AlertStage]
COMPACT_AT = 1024  # the least size of a due-time heap at which its stale entries are dropped
TICKS_PER_KEY = 4  # re-ticks of one key within one tick(now) call (a state that is due again at once)

Settled = int | Mapping[str, int] | None  # how far the stages that `settles` may tick
Position = tuple[int, int, int]  # partition, offset, index in a batch envelope
Store = MutableMapping[str, Any]


class Engine:
    def __init__(self, policy: Policy | None = None, detectors: Iterable[Detector] | None = None,
                 stores: dict[str, Store] | None = None, loopback: bool = False) -> None:
        policy = policy or Policy()
        self.policy = policy
        self.detectors: list[Detector] = list(
            detectors if detectors is not None else (cls(policy) for cls in DETECTORS))
        stores = stores or {}
        self.stores: dict[str, Store] = {d.name: stores.get(d.name, {}) for d in self.detectors}
        self.watermark = 0  # the latest event time seen
        # Events a detector forwards to another key. The worker sends them through Kafka to their
        # key's partition; with `loopback` (replay) they are processed here, in the same call.
        self.loopback = loopback
        # The due-time index: per (partition, detector index) a heap of (due, key); `_due` holds the
        # live entry of each key (a heap entry that differs from it is stale and skipped).
        self._heaps: dict[tuple[int | None, int], list[tuple[int, str]]] = {}
        self._due: list[dict[str, int]] = [{} for _ in self.detectors]
        self._compact_at: dict[tuple[int | None, int], int] = {}  # per heap, its size that drops stale entries
        self._readers: dict[str, list[tuple[int, Detector]]] = {}  # per event kind, the detectors reading it

    # --- events -------------------------------------------------------------------------------

    def process(self, event: dict[str, Any], tokens: list[str], at: Position | None = None) -> Outcome:
        """Every detector that reads this event's kind; `at` is its position (None in replay)."""
        ts = event["ts"]
        if ts > self.watermark:
            self.watermark = ts
        result = Outcome()
        ctx = Context(ts, tokens)
        kind = event["kind"]
        readers = self._readers.get(kind)
        if readers is None:
            readers = self._readers[kind] = [(i, d) for i, d in enumerate(self.detectors) if kind in d.kinds]
        position = list(at) if at is not None else None  # one list for every envelope this event writes
        partition = at[0] if at is not None else None
        stores = self.stores
        for i, det in readers:
            key = det.state_key(event)
            if key is None:
                _merge(result, det.on_event(event, None, ctx))
                continue
            store = stores[det.name]
            env = envelope(store.get(key))
            if at is not None and env is not None and _applied(env[AT], at):
                continue  # a record re-read after a restart: already in this state, and stored
            state = self._state(det, key, env)
            out = det.on_event(event, state, ctx)
            _merge(result, out)
            new = state if out.state is KEEP else out.state
            if new is None:
                if env is not None:
                    del store[key]
                continue
            if env is not None and env[V] == det.state_version:
                # the envelope updated in place (the store's snapshot serialises it, nothing keeps it)
                env[S], env[AT] = new, position
                store[key] = env
            else:
                store[key] = [det.state_version, new, position]
            self._schedule(i, key, partition, det.due(key, new))
        self._route(result)
        self._loop_back(result)
        return result

    # --- timers -------------------------------------------------------------------------------

    def tick(self, now: int, partitions: Collection[int] | None = None, settled: Settled = None,
             bounds: Mapping[int, int] | None = None) -> Outcome:
        """What is due at `now`; with `partitions`, only keys whose events come from those; with
        `settled` (one moment, or one per stage name), detectors that `settles` go no further than
        it (a stage missing from the mapping is not held); with `bounds`, the keys of a
        partition no further than its bound (the worker's event clock, delivery/clock.py). With
        `loopback` (replay), what a tick forwards is processed and ticked too: stage by stage in
        the order of DETECTORS, so that a stage fed by another's timers (the ladder by deadlines,
        the alerts by both) has all its inputs up to `now` before it ticks, as the stream's settled
        moment gives it."""
        if not self.loopback:
            return self._tick(now, partitions, settled, bounds)
        result = Outcome()
        for _ in range(TICKS_PER_KEY):
            forwarded = False
            for i in range(len(self.detectors)):
                out = self._tick(now, partitions, settled, bounds, only=i)
                forwarded = forwarded or bool(out.forward)
                _merge(result, out)
                self._loop_back(result)
            if not forwarded:
                break
        return result

    def _loop_back(self, result: Outcome) -> None:
        """With `loopback` (replay), process what was forwarded here, in the same call."""
        if self.loopback and result.forward:
            forwarded, result.forward = result.forward, []
            for ev in forwarded:
                _merge(result, self.process(ev, []))

    def _route(self, result: Outcome) -> None:
        """Every finding as the policy has it (severity, policy_version), a strike for its member's
        ladder; its alerts: urgent ones now, the rest forwarded to their group's alert stage."""
        if result.findings:
            policy = self.policy
            for f in result.findings:
                org, group = f["org_id"], f["group_id"]
                f["severity"] = policy.severity_for(org, group).of(f["rule"], f["severity"])
                f["policy_version"] = policy.version(org, group)
                if group:  # its status lives in the ladder, also for findings that are no strike
                    result.forward.append(strike_fact(f))
            alerts, later = route(result.findings, policy)
            result.alerts.extend(alerts)
            result.forward.extend(later)

    def reach(self, now: int, partitions: Collection[int], settled: Settled = None,
              bounds: Mapping[int, int] | None = None) -> dict[int, dict[str, int]]:
        """How far a tick with these arguments takes each stage of each partition: what the stream
        records so that the stages fed by this tick's forwards know how far they may go (settled.py)."""
        return {p: {d.name: self._until(d, p, now, settled, bounds) for d in self.detectors} for p in partitions}

    @staticmethod
    def _until(det: Detector, partition: int | None, now: int, settled: Settled,
               bounds: Mapping[int, int] | None) -> int:
        until = now if bounds is None or partition is None else min(now, bounds.get(partition, now))
        if settled is not None and getattr(det, "settles", False):
            held = settled if isinstance(settled, int) else settled.get(det.name)
            if held is not None:
                until = min(until, held)
        return until

    def _tick(self, now: int, partitions: Collection[int] | None, settled: Settled,
              bounds: Mapping[int, int] | None = None, only: int | None = None) -> Outcome:
        """One pass over what is due, detector by detector in the order of DETECTORS (or only the
        detector at index `only`)."""
        result = Outcome()
        ticked: dict[tuple[int, str], int] = {}
        for (partition, i), heap in sorted(self._heaps.items(), key=lambda item: item[0][1]):
            if (partitions is not None and partition not in partitions) or (only is not None and i != only):
                continue
            det = self.detectors[i]
            until = self._until(det, partition, now, settled, bounds)
            ctx = Context(until)
            store = self.stores[det.name]
            while heap and heap[0][0] <= until:
                due, key = heapq.heappop(heap)
                if self._due[i].get(key) != due:
                    continue  # superseded by an earlier entry for the same key
                del self._due[i][key]
                env = envelope(store.get(key))
                if env is None:
                    continue
                n = ticked[(i, key)] = ticked.get((i, key), 0) + 1
                state = self._state(det, key, env)
                if state is None:  # of a version this build cannot read (logged)
                    del store[key]
                    continue
                try:
                    out = det.tick(key, state, ctx)
                except Exception:  # one key's bug must not stop every timer (nor crash-loop the worker)
                    log.exception("%s: tick of %s failed; it waits for its next event", det.name, key)
                    continue
                _merge(result, out)
                new = state if out.state is KEEP else out.state
                if new is None:
                    del store[key]
                    continue
                if out.state is not KEEP or env[V] != det.state_version:
                    store[key] = [det.state_version, new, env[AT]]
                nxt = det.due(key, new)
                if nxt is not None and nxt <= until and (out.state is KEEP or n >= TICKS_PER_KEY):
                    log.warning("%s: %s is due again at once with nothing done; waiting for its next event",
                                det.name, key)
                    continue
                self._schedule(i, key, partition, nxt)
        self._route(result)
        return result

    def reindex(self, partitions: Collection[int] | None = None) -> int:
        """Rebuild the due-time index from the stores (after state was recovered from a changelog);
        with `partitions`, only keys whose events come from those. Returns the keys indexed."""
        n = 0
        for i, det in enumerate(self.detectors):
            for key, raw in list(self.stores[det.name].items()):
                env = envelope(raw)
                if env is None:
                    continue
                partition = env[AT][0] if env[AT] else None
                if partitions is not None and partition not in partitions:
                    continue
                state = self._state(det, key, env)
                if state is None:
                    continue
                self._schedule(i, key, partition, det.due(key, state))
                n += 1
        return n

    def forget(self, partitions: Collection[int]) -> None:
        """Drop the index of partitions this worker no longer owns."""
        for partition, i in [k for k in self._heaps if k[0] in partitions]:
            self._compact_at.pop((partition, i), None)
            for _, key in self._heaps.pop((partition, i)):
                self._due[i].pop(key, None)

    # --- internals ----------------------------------------------------------------------------

    def _schedule(self, i: int, key: str, partition: int | None, due: int | None) -> None:
        if due is None:
            return
        live = self._due[i]
        current = live.get(key)
        if current is not None and current <= due:
            return  # the earlier entry fires first; the tick then asks again
        live[key] = due
        at = (partition, i)
        heap = self._heaps.get(at)
        if heap is None:
            heap = self._heaps[at] = []
        heapq.heappush(heap, (due, key))
        if len(heap) > self._compact_at.get(at, COMPACT_AT):
            # Entries superseded by an earlier due stay until popped: drop them once they are half
            # as many as the live ones (at 100,000 groups they were a third of the index's memory).
            heap[:] = [e for e in heap if live.get(e[1]) == e[0]]
            heapq.heapify(heap)
            self._compact_at[at] = max(len(heap) * 3 // 2, COMPACT_AT)

    @staticmethod
    def _state(det: Detector, key: str, env: list[Any] | None) -> Any:
        if env is None:
            return None
        version = env[V]
        if version == det.state_version:
            return env[S]
        upgrade = getattr(det, "upgrade", None)
        state = None if upgrade is None else upgrade(env[S], version)
        if state is None:  # no upgrade from that version (a newer build wrote it, say)
            log.warning("%s: state of %s has version %s, this build reads %s; starting afresh",
                        det.name, key, version, det.state_version)
        return state


V, S, AT = 0, 1, 2  # the slots of an envelope


def envelope(stored: Any) -> list[Any] | None:
    """A stored value as an envelope list; one written as a dict (before 2026-12-03) converted."""
    if stored is None or type(stored) is list:
        return stored
    return [stored.get("v", 1), stored["s"], stored.get("at")]


def envelope_partition(stored: Any) -> int | None:
    """The partition whose events a stored state follows (None: replay's, which has no positions)."""
    env = envelope(stored)
    at = env[AT] if env is not None else None
    return at[0] if at else None


def _merge(into: Outcome, out: Outcome) -> None:
    if out.findings:
        into.findings.extend(out.findings)
    if out.rows:
        into.rows.extend(out.rows)
    if out.forward:
        into.forward.extend(out.forward)
    if out.alerts:
        into.alerts.extend(out.alerts)


def _applied(last: list[int] | None, at: Position) -> bool:
    """Whether the event at `at` is already in a state last written by the event at `last`."""
    return last is not None and last[0] == at[0] and (last[1], last[2]) >= (at[1], at[2])
