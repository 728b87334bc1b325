"""Runs every detector over events in order, with state in any mutable mapping.

The worker passes stores backed by Faust tables (changelog topics, keyed by group); `qunguard replay`
passes dicts. One implementation, two drivers, identical findings.

Each stored value is an envelope: `{"s": the detector's state, "at": [partition, offset, index]}` of
the last event applied. The worker needs `at` twice: the changelog entry goes to the partition the
key's events come from (so whoever owns that partition after a rebalance recovers it), and after a
crash the worker re-reads records its changelog already holds. For a detector whose state counts
events (`guard_redelivery`), such a record is not applied again; the findings it made are sent
again from `out` (same finding_id, so nothing is doubled downstream) in case they never got out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, MutableMapping
from typing import Any

from pipeline.detectors import Detector, Finding
from pipeline.detectors.content.detector import ContentDetector
from pipeline.detectors.deadline.detector import DeadlineDetector
from pipeline.detectors.flood import FloodDetector
from pipeline.detectors.governance.group import GroupDetector
from pipeline.detectors.governance.member import MemberDetector
from pipeline.policy import Policy

# The rule families, each built from the policy.
DETECTORS: list[type] = [ContentDetector, FloodDetector, DeadlineDetector, GroupDetector, MemberDetector]
OUT_KEEP = 8  # findings remembered per key for re-sending after a crash

Position = tuple[int, int, int]  # partition, offset, index in a batch envelope


class Engine:
    def __init__(self, policy: Policy | None = None, detectors: Iterable[Detector] | None = None,
                 stores: dict[str, MutableMapping[str, Any]] | None = None, loopback: bool = False) -> None:
        policy = policy or Policy()
        self.detectors = list(detectors if detectors is not None else (cls(policy) for cls in DETECTORS))
        stores = stores or {}
        self.stores = {d.name: stores.get(d.name, {}) for d in self.detectors}
        self._with_records = {d.name for d in self.detectors if hasattr(d, "take_records")}
        self._with_events = {d.name for d in self.detectors if hasattr(d, "take_events")}
        self._guarded = {d.name for d in self.detectors if getattr(d, "guard_redelivery", False)}
        self.watermark = 0  # the latest event time seen: the clock for housekeeping ticks
        # Rows beside the findings (notices, responses) that detectors hand over for ClickHouse.
        self.records: list[tuple[str, dict[str, Any]]] = []
        # Events a detector forwards to another key (governance/__init__.py). The worker sends them
        # through Kafka to their key's partition; with `loopback` (replay) they are processed here.
        self.loopback = loopback
        self.derived: list[dict[str, Any]] = []

    def process(self, event: dict[str, Any], tokens: list[str], at: Position | None = None) -> list[Finding]:
        self.watermark = max(self.watermark, event["ts"])
        findings: list[Finding] = []
        for det in self.detectors:
            if event["kind"] not in det.kinds:
                continue
            key = det.state_key(event)
            if key is None:
                findings.extend(det.on_event(event, None, tokens)[0])
                continue
            store = self.stores[det.name]
            env = store.get(key)
            guarded = det.name in self._guarded
            if guarded and at is not None and env is not None and _applied(env["at"], at):
                findings.extend(f for pos, found in env.get("out", ()) if tuple(pos) == at for f in found)
                continue
            found, new = det.on_event(event, env["s"] if env is not None else None, tokens)
            findings.extend(found)
            if det.name in self._with_records:
                self.records.extend(det.take_records())
            if det.name in self._with_events:
                self.derived.extend(det.take_events())
            if new is None:
                if env is not None:
                    del store[key]
                continue
            fresh: dict[str, Any] = {"s": new, "at": list(at) if at is not None else None}
            if guarded:
                out = env.get("out", []) if env is not None else []
                fresh["out"] = (out + [[list(at), found]])[-OUT_KEEP:] if found and at is not None else out
            store[key] = fresh  # always assign: a changelog entry is written on assignment
        if self.loopback and self.derived:
            derived, self.derived = self.derived, []
            for ev in derived:
                findings.extend(self.process(ev, []))
        return findings

    def tick(self, now: int, partitions: Collection[int] | None = None) -> list[Finding]:
        """Timers at `now`; with `partitions`, only keys whose events come from those partitions
        (a worker ticks the groups it owns, not what it still holds from before a rebalance)."""
        findings: list[Finding] = []
        for det in self.detectors:
            store = self.stores[det.name]
            for key in list(store.keys()):
                env = store[key]
                if partitions is not None and env["at"] is not None and env["at"][0] not in partitions:
                    continue
                found, new = det.tick(now, key, env["s"])
                findings.extend(found)
                if det.name in self._with_records:
                    self.records.extend(det.take_records())
                if new is None:
                    del store[key]
                elif new is not env["s"] or found:
                    store[key] = {**env, "s": new}
        return findings


def _applied(last: list[int] | None, at: Position) -> bool:
    """Whether the event at `at` is already in a state last written by the event at `last`."""
    return last is not None and last[0] == at[0] and (last[1], last[2]) >= (at[1], at[2])
