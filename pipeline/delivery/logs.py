"""One line per kind of trouble, not thousands: while a broker is down, the Kafka clients log the
same error several thousand times a second. A handler filter lets the first of each (logger,
message template) through, then one line per `every` seconds saying how many it held back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimit(logging.Filter):
    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.clock = clock
        self.seen: dict[tuple[str, str], list[float | int]] = {}  # → [last let through, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        entry = self.seen.get(key)
        if entry is None or now - entry[0] >= self.every:
            held = int(entry[1]) if entry is not None else 0
            if held:
                record.msg = f"{record.msg} (and {held} more like it in {self.every:.0f}s)"
            self.seen[key] = [now, 0]
            if len(self.seen) > 10_000:
                self.seen.clear()
            return True
        entry[1] = int(entry[1]) + 1
        return False


def install_rate_limit(every: float = 10.0) -> RateLimit:
    """On every handler of the root logger (where Faust's logging writes)."""
    limit = RateLimit(every)
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
    return limit
