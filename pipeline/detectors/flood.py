"""刷屏: `flood.repeat` (the same text N times in a row in a group, near duplicates included) and
`flood.rate` (one sender posting too often, and stickers sooner), per group and in event time.

The state of a group is one JSON list, so it travels through a Faust changelog as it is; a list
and flat sub-lists rather than dicts because 100,000 active groups live in a worker's memory
(bench/bench_flood.py measures it):

    [org, last ts seen,
     tail,      flat [ts, key, msg_id, sender, ts, key, …]: messages still open to a late
                arrival, in ts order; key is the normalised text, None for a message that ends a
                run and cannot start one (image, exempt 收到)
     pre,       the run that ends where the tail begins (a Run, below), or None
     cur,       the run at the end of the tail: where the next in-order message goes on
     rep,       [msg_id, …] tail messages that completed a reported episode, or None
     notices,   [[ts, msg_id], …] recent notices that ask for a reply, or None
     senders,   {id: [over, ts, msg_id, ts, msg_id, …]} posts per sender in ts order, the
                sender who posted last last (so the quietest is first: `due`, `tick`)
     stickers,  the same for stickers, or None
     need, gap] the repeat_count and gap (ms) that `cur` was walked with

Order: an event up to `late_seconds` behind the group's latest takes its place in event-time order,
so an in-order stream and `qunguard replay` (which sorts) see the same sequence and report the same
message. An event later than that is left out of flood counting (it is still stored and checked for
content). A finding already made is never withdrawn: if a late message lands inside an episode that
was reported, the episode stays reported; replay, which sees it in place, may name another message.

Cost: a message that arrives in order steps `cur` once; only a late arrival (or a changed policy)
walks the tail again from `pre`. Both use the one `_step`, and every message's outcome leaves each
run that can be reported reported, so the two agree (tests/test_flood.py compares them).

Bounded memory: the tail keeps at most MAX_TAIL messages, a sender's list at most what the window
needs, and `tick` releases quiet senders and a group once it has been quiet for longer than any
window.
"""

from __future__ import annotations

from functools import lru_cache
from sys import intern
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

# the slots of a group's state (module docstring)
ORG, LAST, TAIL, PRE, CUR, REP, NOTICES, SENDERS, STICKERS, NEED, GAP = range(11)
# the slots of a Run: its first text, members so far, first and latest ts, whether one of them
# completed a reported episode, the other line of an alternation, which line came last ("a"|"b"),
# and where a run of that other line would begin ([ts, key, msg_id, sender, reported])
K, N, T0, T, REPD, ALT, LINE, BM = range(8)
Run = list[Any]


def same_text(key: str, run_key: str | None) -> bool:
    """Whether a message repeats a run's first text: equal after normalisation, or a near
    duplicate (a counter or a few characters changed to dodge equality: 加微信abc1, 加微信abc2),
    measured as the Dice overlap of their character bigrams. A text that extends the other (the
    lists of a 接龙, each member's longer than the last) is no repeat."""
    if key == run_key:
        return True
    if run_key is None:
        return False
    # most pairs differ in length: decided here, without a cache entry for every pair of texts
    a, b = len(key), len(run_key)
    if a > b:
        a, b = b, a
    if a < NEAR_MIN_CHARS or b > a * 1.25:
        return False
    return _near(key, run_key) if len(key) <= len(run_key) else _near(run_key, key)


@lru_cache(maxsize=4_096)  # busy groups' pairs recur; 65,536 entries held 19 MB for a 45% hit rate
def _near(short: str, long_: str) -> bool:
    if long_.startswith(short):
        return False
    a = {short[i:i + 2] for i in range(len(short) - 1)}
    b = {long_[i:i + 2] for i in range(len(long_) - 1)}
    return 2 * len(a & b) / (len(a) + len(b)) >= NEAR_DICE


class FloodDetector:
    name = "flood"
    kinds = frozenset({"message"})
    state_version = 2

    def __init__(self, policy: Policy | None = None, incremental: bool = True) -> None:
        self.policy = policy or Policy()
        # False walks the whole tail for every message: the reference the in-order step is tested against
        self.incremental = incremental

    def state_key(self, event: dict[str, Any]) -> str:
        return cast(str, event["group_id"])

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if event["msg_type"] in EXEMPT_TYPES:
            return Outcome()
        cfg = self.policy.flood_for(event["org_id"], event["group_id"])
        ts = event["ts"]
        if state is None:
            state = [intern(event["org_id"]), ts, [], None, None, None, None, {}, None, None, None]
        elif ts < state[LAST] - cfg.late_ms:
            return Outcome()  # too late to take its place in order (module docstring)
        elif ts > state[LAST]:
            state[LAST] = ts
        findings: list[dict[str, Any]] = []
        # one string per sender (and org), however many of its posts and tail entries name it
        sender = intern(event["sender_id"])
        text = event["text"] or ""
        folded = fold(text) if text else ""
        key = self._key(event, state, cfg, text, folded)
        if text and asks_reply(text, folded):
            state[NOTICES] = ((state[NOTICES] or []) + [[ts, event["msg_id"]]])[-MAX_NOTICES:]
        if "flood.repeat" not in cfg.disabled:
            findings += self._repeats(event, sender, key, state, cfg)
            self._fold(state, cfg)
        if "flood.rate" not in cfg.disabled:
            found = self._rate(event, sender, state, cfg)
            if found is not None:
                findings.append(found)
        return Outcome(findings, state=state)

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        """Release a group that has been quiet past every window, and its quiet senders."""
        now = ctx.now
        cfg = self.policy.flood_for(state[ORG], key)
        if now - state[LAST] > cfg.horizon_ms:
            return Outcome(state=None)
        keep = cfg.keep_ms
        senders, stickers = state[SENDERS], state[STICKERS]
        idle = []
        for sender, times in senders.items():  # quietest first: the idle ones are a prefix
            if now - times[-2] <= keep:
                break
            idle.append(sender)
        if not idle:
            return Outcome()
        for sender in idle:
            del senders[sender]
            if stickers is not None:
                stickers.pop(sender, None)
        return Outcome(state=state)

    def due(self, key: str, state: Any) -> int | None:
        """The first sender to fall quiet past the window, or the whole group past every window."""
        cfg = self.policy.flood_for(state[ORG], key)
        due: int = state[LAST] + cfg.horizon_ms + 1
        senders = state[SENDERS]
        if senders:
            quietest = senders[next(iter(senders))][-2]
            due = min(due, quietest + cfg.keep_ms + 1)
        return due

    def upgrade(self, state: dict[str, Any], version: int) -> Any:
        """A version 1 state (dicts, read from a changelog written before version 2) in this layout."""
        if version != 1:
            return None
        tail = [x for m in state["tail"] for x in m[:4]]
        pre = state["pre"]
        run = None if pre is None else [pre["k"], pre["n"], pre["t0"], pre["t"], pre["rep"], pre.get("alt"),
                                        pre.get("last", "a"), pre.get("bm")]
        senders: dict[str, list[Any]] = {}
        stickers: dict[str, list[Any]] = {}
        for sender, st in sorted(state["senders"].items(), key=lambda kv: kv[1]["t"][-1][0] if kv[1]["t"] else 0):
            if st["t"]:
                senders[sender] = [st["over"], *(x for post in st["t"] for x in post)]
            if st.get("s"):
                stickers[sender] = [st.get("sover"), *(x for post in st["s"] for x in post)]
        # need and gap None: the next message walks the tail from `pre` and finds `cur`
        return [state["org"], state["last"], tail, run, None, state["rep"] or None, state["notices"] or None,
                senders, stickers or None, None, None]

    # --- flood.repeat -------------------------------------------------------------------------

    def _key(self, event: dict[str, Any], state: list[Any], cfg: Flood, text: str, folded: str) -> str | None:
        """What identifies "the same text"; None for a message that can only end a run."""
        if not text.strip():
            return None  # an image, a file, a sticker without a code: different from any text
        notices = state[NOTICES]
        if notices:
            ts = event["ts"]
            window = cfg.notice_open_hours * 3_600_000
            open_ids = {mid for t, mid in notices if 0 <= ts - t <= window}
            if open_ids and (event["reply_to"] in open_ids or is_ack(text, folded)):
                return None  # answering an open notice is what it asked for (SPEC §4)
        return folded or text.strip()

    def _repeats(self, event: dict[str, Any], sender: str, key: str | None, state: list[Any],
                 cfg: Flood) -> list[dict[str, Any]]:
        """Place the message in the tail; report the run it completes, if it does (after a late
        arrival or a changed policy: each run that now reached N and was not reported)."""
        need, gap = cfg.repeat_count, cfg.gap_ms
        ts, msg_id = event["ts"], event["msg_id"]
        tail = state[TAIL]
        if not tail or ts >= tail[-4]:
            tail += (ts, key, msg_id, sender)
            if self.incremental and state[NEED] == need and state[GAP] == gap:
                run, _ = _step(state[CUR], ts, key, msg_id, sender, False, gap)
                state[CUR] = run
                # the run it ended was settled when its last member came; this one may be complete now
                if run[LINE] == "a" and run[N] == need and run[K] is not None and not run[REPD]:
                    run[REPD] = True
                    state[REP] = (state[REP] or []) + [msg_id]
                    return [self._repeat_finding(event, run, ts, msg_id, sender, need)]
                return []
        else:
            at = len(tail) - 4
            while at >= 0 and tail[at] > ts:
                at -= 4
            tail[at + 4:at + 4] = (ts, key, msg_id, sender)
        state[NEED], state[GAP] = need, gap
        return self._walk(event, state, need, gap)

    def _walk(self, event: dict[str, Any], state: list[Any], need: int, gap: int) -> list[dict[str, Any]]:
        """Walk the runs through the tail from `pre`; report each run that reached N in the tail and
        was not reported; leave `cur` at the end."""
        tail, rep = state[TAIL], state[REP]
        reported = [] if rep is None else rep
        run = _empty_run() if state[PRE] is None else list(state[PRE])
        nth: tuple[int, str, str] | None = None  # the member that brought the current run to N
        found: list[dict[str, Any]] = []
        for i in range(0, len(tail), 4):
            ts, key, msg_id, sender = tail[i:i + 4]
            run, ended = _step(run, ts, key, msg_id, sender, msg_id in reported, gap)
            if ended is not None:
                if nth is not None and not ended[REPD]:
                    reported.append(nth[1])
                    found.append(self._repeat_finding(event, ended, *nth, need))
                nth = None
            if run[LINE] == "a" and run[N] == need and run[K] is not None:
                nth = (ts, msg_id, sender)
        if nth is not None and not run[REPD]:
            run[REPD] = True
            reported.append(nth[1])
            found.append(self._repeat_finding(event, run, *nth, need))
        state[CUR] = run
        state[REP] = reported or None
        return found

    def _repeat_finding(self, event: dict[str, Any], run: Run, ts: int, msg_id: str, sender: str,
                        need: int) -> dict[str, Any]:
        evidence: dict[str, Any] = {"normalized": run[K], "count": need, "threshold": need, "first_ts": run[T0],
                                    "window_ms": ts - run[T0]}
        if run[ALT] is not None:
            evidence["interleaved_with"] = run[ALT]
        return make_finding("flood.repeat", "medium", event["org_id"], event["group_id"], msg_id, sender, ts,
                            evidence)

    def _fold(self, state: list[Any], cfg: Flood) -> None:
        """Move messages no late arrival can precede any more into the `pre` run summary."""
        tail, rep = state[TAIL], state[REP]
        floor = state[LAST] - cfg.late_ms
        size = len(tail)
        cut = 0
        while cut < size and (tail[cut] < floor or size - cut > 4 * MAX_TAIL):
            cut += 4
        if not cut:
            return
        gap = cfg.gap_ms
        run = _empty_run() if state[PRE] is None else state[PRE]
        for i in range(0, cut, 4):
            ts, key, msg_id, sender = tail[i:i + 4]
            reported = rep is not None and msg_id in rep
            if reported:
                rep.remove(msg_id)
            run, _ = _step(run, ts, key, msg_id, sender, reported, gap)
        del tail[:cut]
        state[PRE] = run
        if rep is not None and not rep:
            state[REP] = None

    # --- flood.rate ---------------------------------------------------------------------------

    def _rate(self, event: dict[str, Any], sender: str, state: list[Any], cfg: Flood) -> dict[str, Any] | None:
        ts, msg_id = event["ts"], event["msg_id"]
        window, late = cfg.window_ms, cfg.late_ms
        hits = []
        hit = _count(state, SENDERS, sender, ts, msg_id, cfg.rate_limit, window, late)
        if hit is not None:
            hits.append(("messages", cfg.rate_limit, hit))
        if event["msg_type"] == "sticker" and cfg.sticker_limit is not None:
            if state[STICKERS] is None:
                state[STICKERS] = {}
            hit = _count(state, STICKERS, sender, ts, msg_id, cfg.sticker_limit, window, late)
            if hit is not None:
                hits.append(("stickers", cfg.sticker_limit, hit))
        if not hits:
            return None
        evidence = {counted: {"count": count, "limit": limit, "window_s": cfg.rate_window_seconds, "first_ts": first}
                    for counted, limit, (_, _, count, first) in hits}
        at_ts, at_msg = min(hit[:2] for _, _, hit in hits)
        return make_finding("flood.rate", "medium", event["org_id"], event["group_id"], at_msg, sender, at_ts,
                            evidence)


def _count(state: list[Any], slot: int, sender: str, ts: int, msg_id: str, limit: int, window: int,
           late: int) -> tuple[int, str, int, int] | None:
    """The post counted in the sender's list in `state[slot]`. The senders stay in the order of
    their latest post, so the quietest is first: a post moves its sender to the end, and a late
    one that leaves it before another sender's latest sorts them again (rare)."""
    senders = state[slot]
    times = senders.pop(sender, None) or [None]
    hit = _burst(times, limit, ts, msg_id, window, late)
    if senders and times[-2] < senders[next(reversed(senders))][-2]:
        senders[sender] = times
        state[slot] = dict(sorted(senders.items(), key=lambda kv: kv[1][-2]))
    else:
        senders[sender] = times
    return hit


def _burst(times: list[Any], limit: int, ts: int, msg_id: str, window: int,
           late: int) -> tuple[int, str, int, int] | None:
    """Insert the post into `times` ([over, ts, msg_id, ts, msg_id, …]); the first post of a new
    burst it completes, as (ts, msg_id, count, first ts)."""
    at = len(times)
    while at > 1 and times[at - 2] > ts:  # after the posts at or before ts (usually: at the end)
        at -= 2
    times[at:at] = (ts, msg_id)
    found = None
    # Only windows ending at this post or later can change; in order, that is this post alone.
    for i in range(at, len(times), 2):
        end = times[i]
        first = i
        while first > 1 and times[first - 2] > end - window:
            first -= 2
        count = (i - first) // 2 + 1
        if count <= limit:
            continue
        over = times[0]
        if (over is None or abs(end - over) > window) and found is None:
            found = (end, times[i + 1], count, times[first])
        times[0] = end if over is None else max(over, end)
    # Keep what a window (and a late arrival) can still reach, and never more than it needs.
    floor = times[-2] - window - late
    drop = 1
    while drop < len(times) and times[drop] <= floor:
        drop += 2
    drop = max(drop, len(times) - 4 * (limit + 1))
    if drop > 1:
        del times[1:drop]
    return found


# --- the runs of flood.repeat ------------------------------------------------------------------
#
# A run is the same text again and again (A A A), or alternating with one other line from its
# start to dodge "in a row" (A B A B A: the B's are the same text too). In a conversation the
# lines between the 好的 differ (好的 / 几点？/ 好的 / 九点 / 好的 is no run), and A A B still
# ends a row. `_step` is the one definition of how a message continues or ends a run: the
# in-order step, the tail walk and the fold into `pre` all use it, so where the tail begins
# never changes what is found.

def _empty_run() -> Run:
    return [None, 0, 0, 0, False, None, "a", None]


def _new_run(ts: int, key: str | None, reported: bool) -> Run:
    return [key, 0 if key is None else 1, ts, ts, reported, None, "a", None]


def _step(run: Run, ts: int, key: str | None, msg_id: str, sender: str, reported: bool,
          gap: int) -> tuple[Run, Run | None]:
    """`run` after the message (in ts order), and the run it ended, if it did. `run` is changed
    in place when the message continues it."""
    if run[K] is not None and key is not None and ts - run[T] <= gap:
        if same_text(key, run[K]):
            run[T], run[LINE], run[N] = ts, "a", run[N] + 1
            if reported:
                run[REPD] = True
            return run, None
        # the other line of an alternation: from the run's first message on (A B …), so that a
        # different message still ends a row (A A B ends it: the rule is 连续, in a row)
        alt = run[ALT]
        if run[LINE] == "a" and (alt is None and run[N] == 1 or alt is not None and same_text(key, alt)):
            run[ALT] = alt or key
            run[T], run[LINE] = ts, "b"
            run[BM] = [ts, key, msg_id, sender, reported]  # where a run of B would begin
            return run, None
    bm = run[BM]
    if run[LINE] == "b" and bm is not None and key is not None and same_text(key, bm[1]) and ts - bm[0] <= gap:
        # A B A B B: the B's go on as a row of their own, from the last one in the alternation
        restart = _new_run(bm[0], bm[1], bool(bm[4]))
        return _step(restart, ts, key, msg_id, sender, reported, gap)[0], run
    return _new_run(ts, key, reported), run
