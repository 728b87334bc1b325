"""Sign-in throttling: guessing passwords costs time.

After `limit` failed sign-ins for one key (an account name; an address) within `window` seconds,
further attempts for it are refused (HTTP 429, the password not even checked) until the window of
the oldest failure has passed. A success clears the account's failures. In memory: one console
process; a restart forgets, which costs a guesser nothing they did not have (its state is the
attempts of the last minutes). The clock is injected; the app passes its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Throttle:
    def __init__(self, clock: Callable[[], float], limit: int = 5, window: float = 900.0) -> None:
        self.clock, self.limit, self.window = clock, limit, window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        floor = self.clock() - self.window
        while times and times[0] <= floor:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until an attempt for `key` is heard again; 0 if now."""
        times = self._recent(key)
        if len(times) < self.limit:
            return 0
        return int(times[0] + self.window - self.clock()) + 1

    def failed(self, key: str) -> None:
        self._failures.setdefault(key, deque(maxlen=self.limit)).append(self.clock())

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
