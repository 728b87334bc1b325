"""Runs every detector over events in order, with state in any mutable mapping.

The worker passes Faust tables (changelog-backed, keyed by group); `qunguard replay` passes dicts.
One implementation, two drivers, identical findings.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from pipeline.detectors import Detector, Finding

DETECTORS: list[type] = []  # filled as rule families land (flood, content, deadline, membership)


class Engine:
    def __init__(self, detectors: Iterable[Detector] | None = None,
                 stores: dict[str, MutableMapping[str, Any]] | None = None) -> None:
        self.detectors = list(detectors if detectors is not None else (cls() for cls in DETECTORS))
        stores = stores or {}
        self.stores = {d.name: stores.get(d.name, {}) for d in self.detectors}

    def process(self, event: dict[str, Any], tokens: list[str]) -> list[Finding]:
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
