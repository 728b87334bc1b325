"""When a notice is due: an explicit deadline in its text wins, then urgency, then the policy default.

Explicit deadlines, read in the policy's time zone:
- a duration: 10分钟内, 半小时内, 两个小时之内, 3小时以内, 2天内
- a clock time: 下午5点前, 17:00前, 五点半之前 (a bare hour before 8 is the afternoon), 明天上午10点前
  (a time already past today means tomorrow)
- a part of a day: 今天下班前 / 下班前 (policy `workday_end`), 明天上午 (12:00), 明天下午 / 明天 (`workday_end`)
Urgent notices (紧急, 立即, 马上, 立刻, 火速) get `urgent_minutes`. Default and urgent deadlines count
only working time when the policy sets `working_hours`.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from pipeline.policy import Deadline, WorkingHours

_NUM = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_N = r"(\d{1,3}|[零一二两三四五六七八九十]{1,3})"
_DURATION = re.compile(_N + r"?\s*(半)?\s*(个)?\s*(分钟|小时|钟头|天)(?:之内|以内|内)")
_CLOCK = re.compile(r"(今天|今日|今晚|明天|明日|后天)?\s*(上午|早上|中午|下午|傍晚|晚上)?\s*" + _N
                    + r"\s*(?:[:：点时])\s*(\d{1,2}|半)?\s*分?\s*(?:之前|以前|前)")
_WORKDAY_END = re.compile(r"(今天|今日|明天|明日)?\s*下班(?:之前|以前|前)")
_DAY_PART = re.compile(r"(明天|明日|后天)(上午|下午)?(?:之前|以前|前|内|完成|回复|提交|交)")
_URGENT = ("紧急", "立即", "马上", "立刻", "火速", "十万火急")
_DAYS = {None: 0, "今天": 0, "今日": 0, "今晚": 0, "明天": 1, "明日": 1, "后天": 2}


def _number(text: str | None) -> int | None:
    if not text:
        return None
    if text.isdigit():
        return int(text)
    if text.startswith("十"):
        return 10 + (_NUM.get(text[1:], 0) if len(text) > 1 else 0)
    if len(text) >= 2 and text[1] == "十":
        return _NUM[text[0]] * 10 + (_NUM.get(text[2:], 0) if len(text) > 2 else 0)
    return _NUM.get(text)


def due(text: str, ts: int, cfg: Deadline) -> tuple[int, str]:
    """The deadline (epoch ms) of a notice posted at `ts`, and what set it."""
    zone = cfg.zone
    posted = datetime.fromtimestamp(ts / 1000, zone)

    def at(days: int, clock: time) -> int:
        moment = datetime.combine(posted.date() + timedelta(days=days), clock, tzinfo=zone)
        if moment.timestamp() * 1000 <= ts:
            moment += timedelta(days=1)
        return int(moment.timestamp() * 1000)

    m = _DURATION.search(text)
    if m:
        n, half, _, unit = m.groups()
        amount = (_number(n) or (0 if half else 1)) + (0.5 if half else 0)
        minutes = {"分钟": 1, "小时": 60, "钟头": 60, "天": 1440}[unit] * amount
        if minutes > 0:
            return ts + int(minutes * 60_000), f"explicit: {m.group(0)}"
    m = _CLOCK.search(text)
    if m:
        day, part, hour_text, minute_text = m.groups()
        hour = _number(hour_text)
        minute = 30 if minute_text == "半" else (int(minute_text) if minute_text else 0)
        if hour is not None and hour <= 24 and minute < 60:
            if part in ("下午", "傍晚", "晚上") and hour < 12 or day == "今晚" and hour < 12:
                hour += 12
            elif part is None and hour < 8 and (day or posted.hour < hour + 12):
                hour += 12  # 五点半前 said at work means the afternoon, not before dawn
            return at(_DAYS[day], time(hour % 24, minute)), f"explicit: {m.group(0)}"
    m = _WORKDAY_END.search(text)
    if m:
        return at(_DAYS[m.group(1)], time.fromisoformat(cfg.workday_end)), f"explicit: {m.group(0)}"
    m = _DAY_PART.search(text)
    if m:
        day, part = m.groups()
        clock = time(12, 0) if part == "上午" else time.fromisoformat(cfg.workday_end)
        return at(_DAYS[day], clock), f"explicit: {m.group(0)}"
    urgent = any(w in text for w in _URGENT)
    minutes = cfg.urgent_minutes if urgent else cfg.reply_hours * 60
    basis = "urgent" if urgent else "default"
    if cfg.working_hours is not None:
        return add_working_time(ts, int(minutes * 60_000), cfg.working_hours, cfg), basis + ", working hours"
    return ts + int(minutes * 60_000), basis


def add_working_time(ts: int, ms: int, wh: WorkingHours, cfg: Deadline) -> int:
    """`ts` plus `ms` of working time: the clock stops outside the working hours and days."""
    zone = cfg.zone
    start, end = time.fromisoformat(wh.start), time.fromisoformat(wh.end)
    cur = datetime.fromtimestamp(ts / 1000, zone)
    left = timedelta(milliseconds=ms)
    for _ in range(366):
        day_start = datetime.combine(cur.date(), start, tzinfo=zone)
        day_end = datetime.combine(cur.date(), end, tzinfo=zone)
        if cur.isoweekday() in wh.days and cur < day_end:
            cur = max(cur, day_start)
            if cur + left <= day_end:
                return int((cur + left).timestamp() * 1000)
            left -= day_end - cur
        cur = datetime.combine(cur.date() + timedelta(days=1), start, tzinfo=zone)
    return int(cur.timestamp() * 1000)


def escalation(deadline: int, cfg: Deadline) -> int:
    """The next day after the deadline, at `escalate_at` local time."""
    zone = cfg.zone
    day = datetime.fromtimestamp(deadline / 1000, zone).date() + timedelta(days=1)
    return int(datetime.combine(day, time.fromisoformat(cfg.escalate_at), tzinfo=zone).timestamp() * 1000)
