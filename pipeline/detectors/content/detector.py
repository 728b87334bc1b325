"""The content detector: every `content.*` rule and `conduct.quiet_hours` for one message.

One finding per message and rule (finding_id = rule, group, msg_id, sender), with every piece of
evidence for that rule in it: matched terms with their spans in the original text and the
normalised form, masked personal data, links and their domains, the local time for quiet hours.
State per group and sender holds the tail of the last message, for split-message evasion, and the
cues of the sender's recent messages, so that a combination spread over them (我是王总 / 你先帮我转
一笔款) is found on the message that completes it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipeline.detectors import EXEMPT_TYPES, KEEP, Context, Outcome
from pipeline.detectors.content.classifier import Model, Score, default_model, model_at
from pipeline.detectors.content.cues import combinations, cue_hits, discussed, find_combinations, needs
from pipeline.detectors.content.lexicon import is_aimed, is_reminder, matcher_for
from pipeline.detectors.content.links import allowed, find_links
from pipeline.detectors.content.pii import find_personal
from pipeline.detectors.content.quiet_hours import in_quiet_hours
from pipeline.detectors.content.split import next_state, split_hits
from pipeline.policy import Content, Policy, resolve
from pipeline.text.matcher import Matcher
from pipeline.text.normalize import fold
from schemas.records import SEVERITY_RANK as _RANK
from schemas.records import make_finding

TEXT_CACHE = 100_000  # texts whose text-only evidence is remembered
_Entry = tuple[str, str, str, dict[str, Any]]  # (rule, severity, evidence key, item)
# folded text, entries, its cues (cue_hits), the rules it talks about (discussed)
_TextEvidence = tuple[str, tuple[_Entry, ...], dict[str, dict[str, str]], set[str]]


def _recent(state: Any, since: int) -> dict[str, dict[str, list[Any]]]:
    """The cues of the sender's messages since `since`: rule → group → [msg_id, cue, ts]."""
    out: dict[str, dict[str, list[Any]]] = {}
    if not state or "cues" not in state:
        return out  # most senders: no cue in their recent messages
    for rule, groups in state["cues"].items():
        kept = {g: c for g, c in groups.items() if c[2] >= since}
        if kept:
            out[rule] = kept
    return out


def _carried(state: Any, hits: dict[str, dict[str, str]], msg_id: str, ts: int,
             since: int) -> dict[str, dict[str, list[Any]]]:
    """The cues to keep: those of the sender's messages within the window, this one's last."""
    cues = _recent(state, since)
    for rule, groups in hits.items():
        cues.setdefault(rule, {}).update({g: [msg_id, cue, ts] for g, cue in groups.items()})
    return cues


def _across(state: Any, hits: dict[str, dict[str, str]], talked_about: set[str],
            since: int) -> list[tuple[str, str, Any]]:
    """Combinations completed over the sender's messages since `since` and this one (我是王总 / 你先帮我
    转一笔款): the cues named with the message each is in."""
    if not hits:
        return []  # no cue here: no combination completed by this message
    out = []
    for rule, before in _recent(state, since).items():
        now = hits.get(rule, {})
        groups = needs(rule)
        if not now or rule in talked_about or all(g in now for g in groups):
            continue  # nothing new here, a warning, or complete in this message alone (found already)
        if all(g in now or g in before for g in groups):
            severity = next(c.severity for c in combinations() if c.rule == rule)
            cues = {g: ({"normalized": now[g]} if g in now else
                        {"normalized": before[g][1], "msg_id": before[g][0]}) for g in groups}
            out.append((rule, severity, {"combination": cues, "across_messages": True}))
    return out


def _add(out: dict[str, tuple[str, dict[str, Any]]], rule: str, severity: str, key: str, item: Any) -> None:
    """Add one piece of evidence to the rule's finding; the finding takes the highest severity."""
    sev, ev = out.get(rule, (severity, {}))
    ev.setdefault(key, []).append(item)
    out[rule] = (severity if _RANK[severity] > _RANK[sev] else sev, ev)


class ContentDetector:
    name = "content"
    kinds = frozenset({"message"})
    state_version = 1

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self._prepared: dict[int, tuple[Content, Matcher, list[tuple[str, re.Pattern[str]]]]] = {}
        self._texts: dict[tuple[int, str, bool], _TextEvidence] = {}
        self._models: dict[int, tuple[Content, Model | None]] = {}
        self._prepare(self.policy.default)  # a bad lexicon file stops start-up, not the first message
        self._model(self.policy.default)

    def state_key(self, event: dict[str, Any]) -> str:
        return f"{event['group_id']}\x1f{event['sender_id']}"

    def on_event(self, event: dict[str, Any], state: Any, ctx: Context) -> Outcome:
        if event["msg_type"] in EXEMPT_TYPES:
            return Outcome()
        content = self.policy.content_for(event["org_id"], event["group_id"])
        folded, evidence, hits = self.evidence(event, content, state)
        findings = [self._finding(event, rule, sev, ev) for rule, (sev, ev) in evidence.items()
                    if content.enabled(rule)]
        matcher = self._prepare(content)[1]
        new = next_state(folded, event["ts"], event["msg_id"], event["org_id"], matcher.max_len - 1)
        cues = _carried(state, hits, event["msg_id"], event["ts"], event["ts"] - content.split_window_seconds * 1000)
        if cues and new is not None:
            new["cues"] = cues
        return Outcome(findings, state=new)

    def tick(self, key: str, state: Any, ctx: Context) -> Outcome:
        """Forget a sender's tail once no split can complete with it (bounds memory)."""
        due = self.due(key, state)
        return Outcome(state=None if due is None or ctx.now >= due else KEEP)

    def due(self, key: str, state: Any) -> int | None:
        """The moment the group's own split window has passed since the sender's last message."""
        if state is None:
            return None
        window = self.policy.content_for(state.get("org", ""), key.split("\x1f", 1)[0]).split_window_seconds
        return int(state["ts"] + window * 1000 + 1)

    # --- evidence -----------------------------------------------------------------------------

    def evidence(self, event: dict[str, Any], content: Content,
                 state: Any) -> tuple[str, dict[str, tuple[str, dict[str, Any]]], dict[str, dict[str, str]]]:
        """The folded text, rule → (severity, evidence) for one message, and its cues (`cue_hits`)."""
        text = event["text"] or ""
        folded, from_text, hits, talked = self._text_evidence(content, text, bool(event["urls"]))
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for rule, severity, key, item in from_text:
            _add(out, rule, severity, key, dict(item))  # a copy: cached items are shared
        _, matcher, patterns = self._prepare(content)
        if event["file_name"]:
            for entry in self._lexicon(matcher, patterns, "file_name", event["file_name"], None):
                _add(out, *entry)
        if event["urls"]:
            for entry in self._links(content, text, event["urls"]):
                _add(out, *entry)
        if state and event["ts"] - state["ts"] <= content.split_window_seconds * 1000:
            for term in split_hits(matcher, state["tail"], folded):
                _add(out, f"content.{term.category}", term.severity, "matches", {
                    "term": term.term, "field": "text", "split": True,
                    "previous_msg_id": state["msg_id"], "normalized": (state["tail"] + folded)})
        # this message's cues: for combinations across messages, and kept in the state
        for rule, severity, item in _across(state, hits, talked,
                                            event["ts"] - content.split_window_seconds * 1000):
            if rule not in out or "combinations" not in out[rule][1]:
                _add(out, rule, severity, "combinations", item)
        if event["msg_type"] == "red_packet":
            _add(out, "content.red_packet", "medium", "msg_type", "red_packet")
        if event["msg_type"] == "text":
            length = len(text.strip())
            if length > content.max_chars:
                out["content.too_long"] = ("low", {"chars": length, "limit": content.max_chars})
        if content.quiet is not None:
            start, end, tz = content.quiet
            local = in_quiet_hours(event["ts"], start, end, tz)
            if local is not None:
                out["conduct.quiet_hours"] = ("low", {
                    "local_time": local.strftime("%Y-%m-%d %H:%M"), "quiet_hours": [str(start)[:5], str(end)[:5]],
                    "tz": str(tz)})
        return folded, out, hits

    def _text_evidence(self, content: Content, text: str, has_urls: bool) -> _TextEvidence:
        """Everything that depends on the text alone, cached per policy setting and text: chat
        repeats itself (收到, 好的, the same notice forwarded), like the tokenizer's cache."""
        key = (id(content), text, has_urls)
        cached = self._texts.get(key)
        if cached is not None:
            return cached
        folded = fold(text)
        _, matcher, patterns = self._prepare(content)
        entries: list[_Entry] = []
        hits: dict[str, dict[str, str]] = {}
        talked_about: set[str] = set()
        if text:
            entries += self._lexicon(matcher, patterns, "text", text, folded)
            if not has_urls:  # with a urls field, links are taken from both together, uncached
                entries += self._links(content, text, ())
            hits, talked_about = cue_hits(folded), discussed(folded)
            entries += [(rule, severity, "combinations", item)
                        for rule, severity, item in find_combinations(text, folded, hits, talked_about)]
            entries += self._classified(content, folded)
            if talked_about:  # an anti-fraud advisory names the tricks it warns of
                entries = [e for e in entries if e[0] not in talked_about]
            entries += [("content.pii", "high", "personal", {"kind": p.kind, "span": [p.start, p.end],
                                                              "masked": p.masked}) for p in find_personal(text)]
        result = (folded, tuple(entries), hits, talked_about)
        if len(self._texts) >= TEXT_CACHE:
            self._texts.pop(next(iter(self._texts)))  # oldest first: dicts keep insertion order
        self._texts[key] = result
        return result

    def _classified(self, content: Content, folded: str) -> list[_Entry]:
        """The classifier's classes at or above the policy's thresholds (medium: a statistical
        judgement, for a reviewer to confirm), with the n-grams that weighed most."""
        model = self._model(content)
        if model is None or content.classifier is None:
            return []
        out: list[_Entry] = []
        for label, p in model.probabilities(folded).items():
            threshold = content.classifier.thresholds.get(label)
            if threshold is not None and p >= threshold:
                why = Score(label, p, model.explain(folded, label))
                out.append((f"content.{label}", "medium", "classifier", why.evidence(threshold)))
        return out

    def _model(self, content: Content) -> Model | None:
        """The classifier model of one policy setting: its own file, or the shipped weights."""
        found = self._models.get(id(content))
        if found is None or found[0] is not content:
            c = content.classifier
            if c is None or not any(t is not None for t in c.thresholds.values()):
                model = None
            elif c.model is None:
                model = default_model()
            else:
                model = model_at(str(resolve(self.policy.base_dir, c.model)))
            found = self._models[id(content)] = (content, model)
        return found[1]

    @staticmethod
    def _links(content: Content, text: str, urls: Iterable[str]) -> list[_Entry]:
        if "." not in text and not urls:
            return []
        return [("content.link", "medium", "links", {"url": url, "domain": domain,
                                                     "span": list(span) if span else None})  # JSON-native
                for url, domain, span in find_links(text, urls) if not allowed(domain, content.allowed_domains)]

    @staticmethod
    def _lexicon(matcher: Matcher, patterns: list[tuple[str, re.Pattern[str]]], field: str,
                 value: str, folded: str | None) -> list[_Entry]:
        out: list[_Entry] = [(f"content.{m.term.category}", m.term.severity, "matches", {
                    "term": m.term.term, "field": field, "span": [m.start, m.end],
                    "text": value[m.start:m.end], "normalized": m.normalized})
               for m in matcher.find(value, folded) if not is_reminder(value, m.start, m.end)
               and not (m.term.aimed and not is_aimed(value))]
        for category, pattern in patterns:
            out += [(f"content.{category}", "medium", "matches", {
                        "pattern": pattern.pattern, "field": field, "span": list(m.span()), "text": m.group(0)})
                    for m in pattern.finditer(value)]
        return out

    def _prepare(self, content: Content) -> tuple[Content, Matcher, list[tuple[str, re.Pattern[str]]]]:
        """The automaton and compiled patterns of one policy setting (Policy keeps each Content alive)."""
        found = self._prepared.get(id(content))
        if found is None or found[0] is not content:
            patterns = [(cat, re.compile(p)) for cat, pats in sorted(content.patterns.items()) for p in pats]
            found = (content, matcher_for(content.lexicon, self.policy.base_dir), patterns)
            self._prepared[id(content)] = found
        return found

    def _finding(self, event: dict[str, Any], rule: str, severity: str, evidence: dict[str, Any]) -> dict[str, Any]:
        return make_finding(rule, severity, event["org_id"], event["group_id"], event["msg_id"],
                            event["sender_id"], event["ts"], evidence)
