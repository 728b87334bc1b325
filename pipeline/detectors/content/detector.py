"""The content detector: every `content.*` rule and `conduct.quiet_hours` for one message.

One finding per message and rule (finding_id = rule, group, msg_id, sender), with every piece of
evidence for that rule in it: matched terms with their spans in the original text and the
normalised form, masked personal data, links and their domains, the local time for quiet hours.
State per group and sender holds the tail of the last message, for split-message evasion.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipeline.detectors.content.lexicon import is_reminder, matcher_for
from pipeline.detectors.content.links import allowed, find_links
from pipeline.detectors.content.pii import find_personal
from pipeline.detectors.content.quiet_hours import in_quiet_hours
from pipeline.detectors.content.split import next_state, split_hits
from pipeline.policy import Content, Policy
from pipeline.text.normalize import fold
from schemas.records import SEVERITIES, make_finding

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
EXEMPT_TYPES = frozenset({"system", "recall"})  # the platform's own notices, not a member's post


class ContentDetector:
    name = "content"
    kinds = frozenset({"message"})

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._patterns: dict[tuple, list[tuple[str, re.Pattern]]] = {}

    def state_key(self, event: dict[str, Any]) -> str:
        return f"{event['group_id']}\x1f{event['sender_id']}"

    def on_event(self, event: dict[str, Any], state: Any, tokens: list[str]) -> tuple[list[dict], Any]:
        if event["msg_type"] in EXEMPT_TYPES:
            return [], state
        content = self.policy.content_for(event["org_id"], event["group_id"])
        evidence = self.evidence(event, content, state)
        findings = [self._finding(event, rule, sev, ev) for rule, (sev, ev) in evidence.items()
                    if content.enabled(rule)]
        matcher = matcher_for(content.lexicon, self.policy.base_dir)
        new_state = next_state(fold(event["text"]), event["ts"], event["msg_id"], matcher.max_len - 1)
        return findings, new_state

    def tick(self, now: int, key: str, state: Any) -> tuple[list[dict], Any]:
        """Forget a sender's tail once no split can complete with it (bounds memory)."""
        window = self.policy.default.split_window_seconds * 1000
        return [], (None if state is None or now - state["ts"] > window else state)

    # --- evidence -----------------------------------------------------------------------------

    def evidence(self, event: dict[str, Any], content: Content, state: Any) -> dict[str, tuple[str, dict]]:
        """rule → (severity, evidence) for one message."""
        out: dict[str, tuple[str, dict]] = {}
        text = event["text"] or ""
        matcher = matcher_for(content.lexicon, self.policy.base_dir)

        def add(rule: str, severity: str, key: str, item: Any) -> None:
            sev, ev = out.get(rule, (severity, {}))
            ev.setdefault(key, []).append(item)
            out[rule] = (severity if _RANK[severity] > _RANK[sev] else sev, ev)

        for field in ("text", "file_name"):
            value = event.get(field) or ""
            for m in matcher.find(value):
                if is_reminder(value, m.start):
                    continue
                add(f"content.{m.term.category}", m.term.severity, "matches", {
                    "term": m.term.term, "field": field, "span": [m.start, m.end],
                    "text": value[m.start:m.end], "normalized": m.normalized})
            for category, pattern in self._compiled(content):
                for m in pattern.finditer(value):
                    add(f"content.{category}", "medium", "matches", {
                        "pattern": pattern.pattern, "field": field, "span": list(m.span()), "text": m.group(0)})
        if state and event["ts"] - state["ts"] <= content.split_window_seconds * 1000:
            folded = fold(text)
            for term in split_hits(matcher, state["tail"], folded):
                add(f"content.{term.category}", term.severity, "matches", {
                    "term": term.term, "field": "text", "split": True,
                    "previous_msg_id": state["msg_id"], "normalized": (state["tail"] + folded)})
        if event["msg_type"] == "red_packet":
            add("content.red_packet", "medium", "msg_type", "red_packet")
        for url, domain, span in find_links(text, event["urls"]):
            if not allowed(domain, content.allowed_domains):
                where = list(span) if span else None  # JSON-native: the same after a round trip
                add("content.link", "medium", "links", {"url": url, "domain": domain, "span": where})
        for p in find_personal(text):
            add("content.pii", "high", "personal", {"kind": p.kind, "span": [p.start, p.end], "masked": p.masked})
        length = len(text.strip())
        if event["msg_type"] == "text" and length > content.max_chars:
            out["content.too_long"] = ("low", {"chars": length, "limit": content.max_chars})
        if content.quiet is not None:
            start, end, tz = content.quiet
            inside, local = in_quiet_hours(event["ts"], start, end, tz)
            if inside:
                out["conduct.quiet_hours"] = ("low", {
                    "local_time": local.strftime("%Y-%m-%d %H:%M"), "quiet_hours": [str(start)[:5], str(end)[:5]],
                    "tz": str(tz)})
        return out

    def _compiled(self, content: Content) -> Iterable[tuple[str, re.Pattern]]:
        key = tuple(sorted(content.patterns.items()))
        if key not in self._patterns:
            self._patterns[key] = [(cat, re.compile(p)) for cat, pats in key for p in pats]
        return self._patterns[key]

    def _finding(self, event: dict[str, Any], rule: str, severity: str, evidence: dict) -> dict:
        return make_finding(rule, severity, event["org_id"], event["group_id"], event["msg_id"],
                            event["sender_id"], event["ts"], evidence)
