"""Quiet hours (conduct.quiet_hours): a message posted inside the group's rest period, in event time."""

from __future__ import annotations

from datetime import datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo

HOUR_MS = 3_600_000


@lru_cache(maxsize=4_096)
def _offset_ms(tz: ZoneInfo, hour: int) -> int | None:
    """The zone's UTC offset throughout this hour of UTC (epoch ms // HOUR_MS), or None when it
    changes within the hour (a transition; the tz database has no two within an hour)."""
    first = datetime.fromtimestamp(hour * 3600, tz).utcoffset()
    last = datetime.fromtimestamp(hour * 3600 + 3599.999, tz).utcoffset()
    if first is None or first != last:
        return None
    return int(first.total_seconds() * 1000)


def _us(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def in_quiet_hours(ts_ms: int, start: time, end: time, tz: ZoneInfo) -> datetime | None:
    """The local moment when it falls in [start, end) local time (a range may run over midnight),
    else None. Every message is checked: the time of day comes from the zone's offset for that
    hour, and the local datetime is made only for a message inside."""
    offset = _offset_ms(tz, ts_ms // HOUR_MS)
    local: datetime | None = None
    if offset is None:  # the hour of an offset change
        local = datetime.fromtimestamp(ts_ms / 1000, tz)
        t = _us(local.time())
    else:
        t = (ts_ms + offset) % 86_400_000 * 1000
    s, e = _us(start), _us(end)
    if not ((s <= t < e) if s < e else (t >= s or t < e)):
        return None
    return local if local is not None else datetime.fromtimestamp(ts_ms / 1000, tz)
