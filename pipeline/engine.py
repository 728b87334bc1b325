"""Runs every detector over events in order, with state in any mutable mapping.

The worker passes Faust tables (changelog-backed, keyed by group); `qunguard replay` passes dicts.
One implementation, two drivers, identical findings.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from pipeline.detectors import Detector, Finding
from pipeline.detectors.content.detector import ContentDetector
from pipeline.policy import Policy

# The rule families, each built from the policy; flood, deadline and membership join as they land.
DETECTORS: list[type] = [ContentDetector]


class Engine:
    def __init__(self, policy: Policy | None = None, detectors: Iterable[Detector] | None = None,
                 stores: dict[str, MutableMapping[str, Any]] | None = None) -> None:
        policy = policy or Policy()
        self.detectors = list(detectors if detectors is not None else (cls(policy) for cls in DETECTORS))
        stores = stores or {}
        self.stores = {d.name: stores.get(d.name, {}) for d in self.detectors}
        self.watermark = 0  # the latest event time seen: the clock for housekeeping ticks

    def process(self, event: dict[str, Any], tokens: list[str]) -> list[Finding]:
        self.watermark = max(self.watermark, event["ts"])
        findings: list[Finding] = []
        for det in self.detectors:
            if event["kind"] not in det.kinds:
                continue
            key = det.state_key(event)
            store = self.stores[det.name]
            state = store.get(key) if key is not None else None
            found, new = det.on_event(event, state, tokens)
            findings.extend(found)
            if key is not None:
                _put(store, key, state, new)
        return findings

    def tick(self, now: int) -> list[Finding]:
        findings: list[Finding] = []
        for det in self.detectors:
            store = self.stores[det.name]
            for key in list(store.keys()):
                state = store[key]
                found, new = det.tick(now, key, state)
                findings.extend(found)
                _put(store, key, state, new)
        return findings


def _put(store: MutableMapping[str, Any], key: str, old: Any, new: Any) -> None:
    # Always assign: a Faust table writes its changelog entry on assignment, not on mutation.
    if new is not None:
        store[key] = new
    elif old is not None and key in store:
        del store[key]
