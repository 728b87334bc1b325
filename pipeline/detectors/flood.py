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
        keep = (cfg.rate_window_seconds + cfg.late_seconds) * 1000
        # every message asks this: the senders' latest posts in one pass, without a call per sender
        latest = [t[-1][0] for st in state["senders"].values() if (t := st["t"])]
        due = state["last"] + cfg.horizon_ms + 1
        if latest:
            due = min(due, min(latest) + keep + 1)
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
        found: list[dict[str, Any]] = []
        run: Run = _from_pre(state["pre"])
        runs = []
        for m in state["tail"]:
            run, ended = _step(run, m, gap, m[2] in rep, folding=False)
            if ended is not None:
                runs.append(ended)
        runs.append(run)
        for r in runs:
            members = r["members"]
            if (r["k"] is None or not members or r["n"] + len(members) < need or r["n"] >= need or r["rep"]
                    or any(m[2] in rep for m in members)):
                continue
            nth = members[need - r["n"] - 1]
            rep.append(nth[2])
            found.append(self._repeat_finding(event, r, nth, need))
        return found

    def _repeat_finding(self, event: dict[str, Any], run: Run, nth: list[Any], need: int) -> dict[str, Any]:
        ts, _, msg_id, sender = nth
        evidence: dict[str, Any] = {"normalized": run["k"], "count": need, "threshold": need, "first_ts": run["t0"],
                                    "window_ms": ts - run["t0"]}
        if run["alt"] is not None:
            evidence["interleaved_with"] = run["alt"]
        return make_finding("flood.repeat", "medium", event["org_id"], event["group_id"], msg_id, sender, ts,
                            evidence)

    def _fold(self, state: dict[str, Any], cfg: Flood) -> None:
        """Move messages no late arrival can precede any more into the `pre` run summary."""
        tail, rep = state["tail"], state["rep"]
        floor = state["last"] - cfg.late_seconds * 1000
        gap = cfg.repeat_gap_seconds * 1000
        cut = 0
        run = _from_pre(state["pre"])
        while cut < len(tail) and (tail[cut][0] < floor or len(tail) - cut > MAX_TAIL):
            m = tail[cut]
            reported = m[2] in rep
            if reported:
                rep.remove(m[2])
            run, _ = _step(run, m, gap, reported, folding=True)
            cut += 1
        if cut:
            del tail[:cut]
            state["pre"] = {k: v for k, v in run.items() if k != "members"}

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


# --- the runs of flood.repeat ------------------------------------------------------------------
#
# A run is the same text again and again (A A A), or alternating with one other line from its
# start to dodge "in a row" (A B A B A: the B's are the same text too). In a conversation the
# lines between the 好的 differ (好的 / 几点？/ 好的 / 九点 / 好的 is no run), and A A B still
# ends a row. `_step` is the one definition of how a message continues or ends a run: the tail
# walk and the fold into `pre` both use it, so where the tail begins never changes what is found.
Run = dict[str, Any]  # k, n (members folded), t0, t, rep, alt, last ("a" | "b"), bm, members


def _new_run(m: list[Any], reported: bool, folded: bool) -> Run:
    return {"k": m[1], "n": 1 if folded and m[1] is not None else 0, "t0": m[0], "t": m[0], "rep": folded and reported,
            "alt": None, "last": "a", "bm": None, "members": [] if folded else [m]}


def _from_pre(pre: dict[str, Any] | None) -> Run:
    if pre is None:
        return {"k": None, "n": 0, "t0": 0, "t": 0, "rep": False, "alt": None, "last": "a", "bm": None, "members": []}
    return {"alt": None, "last": "a", "bm": None, **pre, "members": []}


def _step(run: Run, m: list[Any], gap: int, reported: bool, folding: bool) -> tuple[Run, Run | None]:
    """`run` after message `m` (in ts order), and the run it ended, if it did."""
    ts, key = m[0], m[1]
    if run["k"] is not None and key is not None and ts - run["t"] <= gap:
        if same_text(key, run["k"]):
            run["t"], run["last"] = ts, "a"
            if folding:
                run["n"] += 1
                run["rep"] = run["rep"] or reported
            else:
                run["members"].append(m)
            return run, None
        # the other line of an alternation: from the run's first message on (A B …), so that a
        # different message still ends a row (A A B ends it: the rule is 连续, in a row)
        alternating = run["alt"] is not None or (run["n"] + len(run["members"]) == 1)
        if run["last"] == "a" and alternating and (run["alt"] is None or same_text(key, run["alt"])):
            run["alt"] = run["alt"] or key
            run["t"], run["last"] = ts, "b"
            run["bm"] = [*m[:4], reported if folding else None]  # where a run of B would begin
            return run, None
    bm = run["bm"]
    if run["last"] == "b" and bm is not None and key is not None and same_text(key, bm[1]) and ts - bm[0] <= gap:
        # A B A B B: the B's go on as a run of their own, from the last one in the alternation
        from_pre = bm[4] is not None
        restart = _new_run(bm[:4], bool(bm[4]), folded=from_pre)
        return _step(restart, m, gap, reported, folding)[0], run
    return _new_run(m, reported, folding), run
