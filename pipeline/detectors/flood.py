"""刷屏: `flood.repeat` (the same text N times in a row in a group, near duplicates included) and
`flood.rate` (one sender posting too often, and stickers sooner), per group and in event time.

The state of a group is plain JSON, so it travels through a Faust changelog as it is:

    {"org": org_id, "last": latest ts seen,
     "tail": [[ts, key, msg_id, sender], …]   messages still open to a late arrival, in ts order;
                                             key is the normalised text, None for a message that
                                             ends a run and cannot start one (image, exempt 收到)
     "pre": {"k", "n", "t0", "t", "rep"}     the run that ends where the tail begins
     "rep": [msg_id, …]                      tail messages that completed a reported episode
     "notices": [[ts, msg_id], …]            recent notices that ask for a reply
     "senders": {id: {"t": [[ts, msg_id]…], "over": ts, "s": […], "sover": ts}}}

Order: an event up to `late_seconds` behind the group's latest takes its place in event-time order,
so an in-order stream and `qunguard replay` (which sorts) see the same sequence and report the same
message. An event later than that is left out of flood counting (it is still stored and checked for
content). A finding already made is never withdrawn: if a late message lands inside an episode that
was reported, the episode stays reported; replay, which sees it in place, may name another message.

Bounded memory: the tail keeps at most MAX_TAIL messages, a sender's list at most what the window
needs, and `tick` releases a group once it has been quiet for longer than any window.
"""

from __future__ import annotations

import bisect
from functools import lru_cache
from typing import Any, cast

from pipeline.detectors import EXEMPT_TYPES, Context, Outcome
from pipeline.policy import Flood, Policy
from pipeline.text.normalize import fold
from pipeline.text.notice import asks_reply, is_ack
from schemas.records import make_finding

MAX_TAIL = 64
MAX_NOTICES = 4
NEAR_MIN_CHARS = 8  # shorter texts are the same only when equal (会议改到三点 / 四点 are two messages)
NEAR_DICE = 0.8


@lru_cache(maxsize=65_536)
def same_text(key: str, run_key: str | None) -> bool:
    """Whether a message repeats a run's first text: equal after normalisation, or a near
    duplicate (a counter or a few characters changed to dodge equality: 加微信abc1, 加微信abc2),
    measured as the Dice overlap of their character bigrams. A text that extends the other (the
    lists of a 接龙, each member's longer than the last) is no repeat."""
    if run_key is None:
        return False
    if key == run_key:
        return True
    short, long_ = sorted((key, run_key), key=len)
    if len(short) < NEAR_MIN_CHARS or len(long_) > len(short) * 1.25 or long_.startswith(short):
        return False
    a = {short[i:i + 2] for i in range(len(short) - 1)}
    b = {long_[i:i + 2] for i in range(len(long_) - 1)}
    return 2 * len(a & b) / (len(a) + len(b)) >= NEAR_DICE


class FloodDetector:
    name = "flood"
    kinds = frozenset({"message"})
    state_version = 1

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()

    def state_key(self, event: dict[str, Any]) -> str:
        return cast(str, event["group_id"])

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if event["msg_type"] in EXEMPT_TYPES:
            return Outcome()
        cfg = self.policy.flood_for(event["org_id"], event["group_id"])
        ts = event["ts"]
        if state is None:
            state = {"org": event["org_id"], "last": ts, "tail": [], "pre": None, "rep": [], "notices": [],
                     "senders": {}}
        elif ts < state["last"] - cfg.late_seconds * 1000:
            return Outcome()  # too late to take its place in order (module docstring)
        state["last"] = max(state["last"], ts)
        findings: list[dict[str, Any]] = []
        text = event["text"] or ""
        folded = fold(text) if text else ""
        key = self._key(event, state, cfg, text, folded)
        if asks_reply(text, folded) if text else False:
            state["notices"] = (state["notices"] + [[ts, event["msg_id"]]])[-MAX_NOTICES:]
        if cfg.enabled("flood.repeat"):
            item = [ts, key, event["msg_id"], event["sender_id"]]
            tail = state["tail"]
            tail.insert(bisect.bisect_right(tail, ts, key=lambda m: m[0]), item)
            findings += self._repeats(event, state, cfg)
            self._fold(state, cfg)
        if cfg.enabled("flood.rate"):
            findings += self._rate(event, state, cfg)
        return Outcome(findings, state=state)

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        """Release a group that has been quiet past every window, and its quiet senders."""
        now = ctx.now
        cfg = self.policy.flood_for(state["org"], key)
        if now - state["last"] > cfg.horizon_ms:
            return Outcome(state=None)
        keep = (cfg.rate_window_seconds + cfg.late_seconds) * 1000
        senders = state["senders"]
        idle = [s for s, st in senders.items() if now - st["t"][-1][0] > keep]
        if not idle:
            return Outcome()
        return Outcome(state={**state, "senders": {s: st for s, st in senders.items() if s not in idle}})

    def due(self, key: str, state: Any) -> int | None:
        """The first sender to fall quiet past the window, or the whole group past every window."""
        cfg = self.policy.flood_for(state["org"], key)
        due = state["last"] + cfg.horizon_ms + 1
        keep = (cfg.rate_window_seconds + cfg.late_seconds) * 1000
        for st in state["senders"].values():
            if st["t"]:
                due = min(due, st["t"][-1][0] + keep + 1)
        return int(due)

    # --- flood.repeat -------------------------------------------------------------------------

    def _key(self, event: dict[str, Any], state: dict[str, Any], cfg: Flood, text: str, folded: str) -> str | None:
        """What identifies "the same text"; None for a message that can only end a run."""
        if not text.strip():
            return None  # an image, a file, a sticker without a code: different from any text
        if state["notices"]:
            ts = event["ts"]
            window = cfg.notice_open_hours * 3_600_000
            open_ids = {mid for t, mid in state["notices"] if 0 <= ts - t <= window}
            if open_ids and (event["reply_to"] in open_ids or is_ack(text, folded)):
                return None  # answering an open notice is what it asked for (SPEC §4)
        return folded or text.strip()

    def _repeats(self, event: dict[str, Any], state: dict[str, Any], cfg: Flood) -> list[dict[str, Any]]:
        """Walk the runs through the tail; report each run that reached N and was not reported."""
        need, gap = cfg.repeat_count, cfg.repeat_gap_seconds * 1000
        rep = state["rep"]
        pre = state["pre"]
        found: list[dict[str, Any]] = []
        # A run: key, count before the tail, first ts, last ts, reported, its tail members.
        run = [pre["k"], pre["n"], pre["t0"], pre["t"], pre["rep"], []] if pre else [None, 0, 0, 0, False, []]
        runs = []
        for m in state["tail"]:
            ts, key = m[0], m[1]
            if key is not None and same_text(key, run[0]) and ts - run[3] <= gap:
                run[3] = ts
                run[5].append(m)
            else:
                runs.append(run)
                run = [key, 0, ts, ts, False, [m]]
        runs.append(run)
        for key, before, t0, _, reported, members in runs:
            if (key is None or not members or before + len(members) < need or before >= need or reported
                    or any(m[2] in rep for m in members)):
                continue
            nth = members[need - before - 1]
            rep.append(nth[2])
            found.append(self._repeat_finding(event, key, nth, t0, need))
        return found

    def _repeat_finding(self, event: dict[str, Any], key: str, nth: list[Any], t0: int, need: int) -> dict[str, Any]:
        ts, _, msg_id, sender = nth
        evidence = {"normalized": key, "count": need, "threshold": need, "first_ts": t0, "window_ms": ts - t0}
        return make_finding("flood.repeat", "medium", event["org_id"], event["group_id"], msg_id, sender, ts,
                            evidence)

    def _fold(self, state: dict[str, Any], cfg: Flood) -> None:
        """Move messages no late arrival can precede any more into the `pre` run summary."""
        tail, rep = state["tail"], state["rep"]
        floor = state["last"] - cfg.late_seconds * 1000
        gap = cfg.repeat_gap_seconds * 1000
        cut = 0
        pre = state["pre"]
        while cut < len(tail) and (tail[cut][0] < floor or len(tail) - cut > MAX_TAIL):
            ts, key, msg_id, _ = tail[cut]
            reported = msg_id in rep
            if reported:
                rep.remove(msg_id)
            if pre is not None and key is not None and same_text(key, pre["k"]) and ts - pre["t"] <= gap:
                pre = {**pre, "n": pre["n"] + 1, "t": ts, "rep": pre["rep"] or reported}
            else:
                pre = {"k": key, "n": 1 if key is not None else 0, "t0": ts, "t": ts, "rep": reported}
            cut += 1
        if cut:
            del tail[:cut]
            state["pre"] = pre

    # --- flood.rate ---------------------------------------------------------------------------

    def _rate(self, event: dict[str, Any], state: dict[str, Any], cfg: Flood) -> list[dict[str, Any]]:
        ts, msg_id = event["ts"], event["msg_id"]
        st = state["senders"].setdefault(event["sender_id"], {"t": [], "over": None})
        evidence: dict[str, Any] = {}
        bursts = [("t", "over", cfg.rate_limit, "messages")]
        if event["msg_type"] == "sticker" and cfg.sticker_limit is not None:
            st.setdefault("s", [])
            st.setdefault("sover", None)
            bursts.append(("s", "sover", cfg.sticker_limit, "stickers"))
        completed: list[tuple[int, str]] = []
        for times_key, over_key, limit, counted in bursts:
            hit = self._burst(st, times_key, over_key, limit, ts, msg_id, cfg)
            if hit is not None:
                completed.append(hit[:2])
                evidence[counted] = {"count": hit[2], "limit": limit, "window_s": cfg.rate_window_seconds,
                                     "first_ts": hit[3]}
        if not completed:
            return []
        at_ts, at_msg = min(completed)
        return [make_finding("flood.rate", "medium", event["org_id"], event["group_id"], at_msg,
                             event["sender_id"], at_ts, evidence)]

    def _burst(self, st: dict[str, Any], times_key: str, over_key: str, limit: int, ts: int, msg_id: str,
               cfg: Flood) -> tuple[int, str, int, int] | None:
        """Insert the post; the first post of a new burst it completes, as (ts, msg_id, count, first)."""
        window = cfg.rate_window_seconds * 1000
        times = st[times_key]
        at = bisect.bisect_right(times, ts, key=lambda m: m[0])
        times.insert(at, [ts, msg_id])
        found = None
        # Only windows ending at this post or later can change; in order, that is this post alone.
        for i in range(at, len(times)):
            end = times[i][0]
            first = bisect.bisect_right(times, end - window, key=lambda m: m[0])
            count = i - first + 1
            if count <= limit:
                continue
            over = st[over_key]
            if (over is None or abs(end - over) > window) and found is None:
                found = (end, times[i][1], count, times[first][0])
            st[over_key] = end if over is None else max(over, end)
        # Keep what a window (and a late arrival) can still reach, and never more than it needs.
        floor = times[-1][0] - window - cfg.late_seconds * 1000
        drop = bisect.bisect_right(times, floor, key=lambda m: m[0])
        drop = max(drop, len(times) - 2 * (limit + 1))
        if drop > 0:
            del times[:drop]
        return found
