"""Quiet hours (conduct.quiet_hours): a message posted inside the group's rest period, in event time."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo


def in_quiet_hours(ts_ms: int, start: time, end: time, tz: ZoneInfo) -> tuple[bool, datetime]:
    """Whether the moment falls in [start, end) local time; a range may run over midnight."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz)
    t = local.time()
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    return inside, local
