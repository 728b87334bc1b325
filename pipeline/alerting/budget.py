"""A robot's budget (SPEC §8: DingTalk and WeCom 20 messages a minute, Feishu 100 a minute and 5 a
second), as sliding windows over the messages sent; the clock is injected."""

from __future__ import annotations

from collections import deque


class Budget:
    def __init__(self, per_minute: int, per_second: int | None = None) -> None:
        self.per_minute = per_minute
        self.per_second = per_second
        self._sent: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more message may go (0: now)."""
        while self._sent and self._sent[0] <= now - 60:
            self._sent.popleft()
        wait = 0.0
        if len(self._sent) >= self.per_minute:
            wait = self._sent[-self.per_minute] + 60 - now
        if self.per_second is not None and len(self._sent) >= self.per_second:
            wait = max(wait, self._sent[-self.per_second] + 1 - now)
        return max(wait, 0.0)

    def spend(self, now: float) -> None:
        self._sent.append(now)
