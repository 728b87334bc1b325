"""One channel's queue of alerts and what to do with the platform's reply: the notifier's pure part.

Alerts wait in the queue; when the budget allows a message, everything queued (up to
MAX_PER_MESSAGE alerts) goes as one message: over budget, alerts merge into digests, never dropped.
A "too fast" reply or a channel that is down keeps the alerts queued and backs off; an alert still
undelivered `retry_seconds` after its first try is given up (a dead letter). A configuration error
(bad key or signature) gives up the alerts it met and every later one at once, reported once.
The clock is injected; `Attempt`s are what the notifier stores and how it settles each alert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pipeline.alerting.budget import Budget
from pipeline.alerting.channels import Reply

MAX_PER_MESSAGE = 1000  # a digest counts every alert it carries; the text lists the first few
MAX_BACKOFF = 30.0


@dataclass
class Pending:
    alert: dict[str, Any]
    ref: Any  # where it came from (the notifier's Kafka position), handed back when it is settled
    read_at: float  # when the notifier read it (wall clock, seconds)
    first_try: float | None = None
    attempts: int = 0


@dataclass(frozen=True)
class Attempt:
    pending: Pending
    status: str  # sent, retry, config_error, dead
    error: str
    at: float
    message_id: str

    @property
    def final(self) -> bool:
        return self.status != "retry"


@dataclass
class Outbox:
    name: str
    budget: Budget
    retry_seconds: float
    queue: list[Pending] = field(default_factory=list)
    broken: str | None = None  # the configuration error met, if any
    backoff_until: float = 0.0
    _backoff: float = 0.0

    def add(self, p: Pending, now: float) -> list[Attempt]:
        if self.broken is not None:  # a bad key stays bad until the configuration changes
            return [Attempt(p, "config_error", self.broken, now, "")]
        self.queue.append(p)
        return []

    def ready_in(self, now: float) -> float | None:
        """Seconds until the next message may go; None when nothing waits."""
        if not self.queue:
            return None
        return max(self.budget.wait(now), self.backoff_until - now, 0.0)

    def take(self, now: float) -> list[Pending]:
        """The alerts of the next message; the budget is spent on it."""
        batch = self.queue[:MAX_PER_MESSAGE]
        for p in batch:
            p.attempts += 1
            if p.first_try is None:
                p.first_try = now
        self.budget.spend(now)
        return batch

    def settle(self, batch: list[Pending], reply: Reply, now: float) -> list[Attempt]:
        """What the reply means for each alert of the message; settled ones leave the queue."""
        message_id = hashlib.blake2b("|".join(p.alert["alert_id"] for p in batch).encode() + str(now).encode(),
                                     digest_size=8).hexdigest()
        out: list[Attempt] = []
        if reply.outcome == "sent":
            self._backoff = 0.0
            out = [Attempt(p, "sent", "", now, message_id) for p in batch]
        elif reply.outcome == "config":
            self.broken = f"configuration error: {reply.error}"
            out = [Attempt(p, "config_error", self.broken, now, message_id) for p in batch]
            out += [Attempt(p, "config_error", self.broken, now, "") for p in self.queue if p not in batch]
            self.queue = []
        elif reply.outcome == "failed":
            out = [Attempt(p, "dead", f"refused by the platform: {reply.error}", now, message_id) for p in batch]
        else:  # too fast, or down: back off and try again
            self._backoff = min(max(self._backoff * 2, 1.0), MAX_BACKOFF)
            self.backoff_until = now + (reply.wait if reply.wait is not None else self._backoff)
            for p in batch:
                given_up = p.first_try is not None and now - p.first_try >= self.retry_seconds
                status = "dead" if given_up else "retry"
                error = f"{reply.outcome.replace('_', ' ')}: {reply.error}"
                out.append(Attempt(p, status, f"gave up after {p.attempts} attempts: {error}" if given_up else error,
                                   now, message_id))
        settled = {id(a.pending) for a in out if a.final}
        self.queue = [p for p in self.queue if id(p) not in settled]
        return out
