"""Split-message evasion: a banned term spread over one sender's consecutive messages (赌 … 博).

State per group and sender: the normalised tail of the last message (as long as the longest term
minus one) and its event time. A term counts when it starts in that tail and ends in the new
message, within the window. Short ambiguous terms (`boundary`) are left out: across two messages
jieba has no words to agree with, and 黄 + 色 by chance is not evidence.
"""

from __future__ import annotations

from typing import Any

from pipeline.text.matcher import Matcher, Term


def split_hits(matcher: Matcher, tail: str, folded: str) -> list[Term]:
    if not tail or not folded:
        return []
    hits, allowed = matcher.scan(tail + folded)
    cut = len(tail)
    out = []
    for start, end, term in hits:
        if start < cut < end and not term.boundary and not any(a <= start and end <= b for a, b in allowed):
            out.append(term)
    return out


def next_state(folded: str, ts: int, msg_id: str, org_id: str, keep: int) -> dict[str, Any] | None:
    """The tail to keep; `org` so that the timer finds the group's own window (policy per org)."""
    return {"tail": folded[-keep:], "ts": ts, "msg_id": msg_id, "org": org_id} if folded and keep > 0 else None
