"""Learning from verdicts: false positives that share a matched context become suggested allow-list
entries for their org (`qunguard policy suggest`), applied to the policy file only when accepted.

A content match is judged in its context: the jieba words that cover the matched span. When the
reviewers withdrew matches of 手相 inside 二手相机 again and again, and confirmed none, 二手相机 is a
harmless context: `content.lexicon.allow` suppresses a match inside it, for the org only. When the
covering word is the term itself there is no context to allow; the term is reported with its
counts, for a person to decide (`lexicon.remove`), never removed by this command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.policy import load_policy
from pipeline.text.tokenize import Tokenizer


@dataclass(frozen=True)
class Suggestion:
    org_id: str
    rule: str
    term: str
    context: str  # the allow entry; equal to `term` when there is none to suggest
    false_positives: int
    confirmed: int
    example: str  # one message it came from

    @property
    def allow(self) -> bool:
        return self.context != self.term


def context_of(text: str, span: tuple[int, int], tokenizer: Tokenizer) -> str:
    """The words of `text` that cover `span` (character offsets), joined."""
    start, end = span
    covering = [(s, e) for _, s, e in tokenizer.spans(text) if s < end and e > start]
    if not covering:
        return text[start:end]
    return text[min(s for s, _ in covering):max(e for _, e in covering)]


def suggest(reviewed: Iterable[tuple[str, str, str, str, str]], tokenizer: Tokenizer,
            min_count: int = 2) -> list[Suggestion]:
    """`reviewed`: (org_id, rule, evidence JSON, message text, status) of reviewed content findings.
    A context is suggested when at least `min_count` of its matches were withdrawn and none confirmed."""
    counts: dict[tuple[str, str, str, str], list[Any]] = {}
    for org, rule, evidence, text, status in reviewed:
        for m in orjson.loads(evidence).get("matches", ()):
            if m.get("field", "text") != "text" or "span" not in m or "term" not in m:
                continue
            ctx = context_of(text, tuple(m["span"]), tokenizer)
            c = counts.setdefault((org, rule, m["term"], ctx), [0, 0, text])
            c[0 if status == "false_positive" else 1] += 1
    out = [Suggestion(org, rule, term, ctx, fp, ok, example)
           for (org, rule, term, ctx), (fp, ok, example) in counts.items() if fp >= min_count and ok == 0]
    return sorted(out, key=lambda s: (s.org_id, -s.false_positives, s.rule, s.context))


def accept(policy_file: str | Path, suggestions: Iterable[Suggestion]) -> int:
    """Add the suggested contexts to each org's `content.lexicon.allow` in the policy file, keeping
    its comments and layout; the result is loaded as a policy before it replaces the file. Returns
    how many entries were added."""
    from ruamel.yaml import YAML

    path = Path(policy_file)
    yaml = YAML()
    doc = yaml.load(path.read_text(encoding="utf-8")) if path.exists() else None
    doc = doc if doc is not None else {}
    added = 0
    for s in suggestions:
        if not s.allow:
            continue
        org = doc.setdefault("orgs", {}).setdefault(s.org_id, {})
        allow = org.setdefault("content", {}).setdefault("lexicon", {}).setdefault("allow", [])
        if s.context not in allow:
            allow.append(s.context)
            added += 1
    tmp = path.with_name(path.name + ".new")
    with tmp.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)
    try:
        load_policy(tmp)
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(path)
    return added
