"""The detector contract: an event, its keyed state and a context in; an explicit `Outcome` out.

Each rule family lives in a module of its own (flood.py, content/…, deadline/…, governance/…) and
is listed in `pipeline.engine.DETECTORS`. A detector is plain Python driven by event time:

- `on_event(event, state, ctx)` and `tick(key, state, ctx)` return an `Outcome`: the findings, the
  rows it hands to storage beside them (notices, responses, memberships), events forwarded to
  another key, alerts, and the new state (`KEEP` when unchanged, `None` to forget the key).
- `due(key, state)` says when `tick` next has something to do for that key (epoch ms, or None for
  "not until another event"). The engine keeps these in an index, so a timer costs what is due. A
  due time may be early (the tick then does nothing), never late.
- `settles = True` (optional) marks a detector whose inputs are forwarded from other partitions:
  the worker ticks it only up to the moment before which every partition's forwards have been
  published, so that late forwards are still applied in event-time order.
- `state_version` is stored beside the state; a stored state of another version is handed to
  `upgrade` (or dropped, with a log line) instead of being misread.

A detector never reads the wall clock, never sees Kafka positions and never deduplicates
redelivered records: `ctx.now` is event time (in replay and the worker alike, the worker's timer
supplies it at the edge), and the engine applies every record exactly once whatever order Kafka
delivers it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

Finding = dict[str, Any]
Row = tuple[str, dict[str, Any]]  # (table, record): a row a detector hands over beside its findings
# Message types that are the platform's own notices, not a member's post: no rule applies to them.
EXEMPT_TYPES = frozenset({"system", "recall"})


class _Keep:
    """The state is unchanged: nothing is written to the store or its changelog."""

    _instance: _Keep | None = None

    def __new__(cls) -> _Keep:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


@dataclass(slots=True)
class Outcome:
    findings: list[Finding] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    forward: list[dict[str, Any]] = field(default_factory=list)  # events for another key's partition
    alerts: list[dict[str, Any]] = field(default_factory=list)
    state: Any = KEEP


@dataclass(frozen=True, slots=True)
class Context:
    now: int  # event time: the event's ts in on_event, the timer's moment in tick
    tokens: tuple[str, ...] | list[str] = ()  # jieba's tokens of a message's text


class Detector(Protocol):
    name: str
    kinds: frozenset[str]  # event kinds it reads
    state_version: int

    def state_key(self, event: dict[str, Any]) -> str | None:
        """The key of the state this event touches (group, sender, org …), or None for none."""

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        """What this event decides, and the new state for its key."""

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        """What has come due at `ctx.now` for `key`, and its new state."""

    def due(self, key: str, state: Any) -> int | None:
        """When `tick` next has work for this key's state (never later than it really has)."""

