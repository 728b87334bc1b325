"""Pure detectors: an event and its keyed state in, findings and new state out; `tick(now)` for timers.

Each rule family lives in a module of its own (flood.py, content/…, deadline.py, …) and is listed in
`pipeline.engine.DETECTORS`. A detector never reads the wall clock: `now` is event time in replay
and the worker's clock only at the edge (its timer).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

Finding = dict[str, Any]
# Message types that are the platform's own notices, not a member's post: no rule applies to them.
EXEMPT_TYPES = frozenset({"system", "recall"})
State = MutableMapping[str, Any]


class Detector(Protocol):
    name: str
    kinds: frozenset[str]  # event kinds it reads

    def state_key(self, event: dict[str, Any]) -> str | None:
        """The key of the state this event touches (group, sender, org …), or None for none."""

    def on_event(self, event: dict[str, Any], state: Any, tokens: list[str]) -> tuple[list[Finding], Any]:
        """Findings for this event and the new state for its key (None deletes the key)."""

    def tick(self, now: int, key: str, state: Any) -> tuple[list[Finding], Any]:
        """Findings whose time has come at `now` (epoch ms) and the new state for `key`."""
