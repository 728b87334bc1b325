"""Rules on combinations of cues (pipeline/data/cues.yaml): a claimed identity, a money or account
request and a push, together, is fraud; a promotion with a contact is an advert. Each cue alone is
ordinary work chat (财务已转账, 有问题私聊), which a lexicon of single terms cannot tell apart.

Matched over the normalised text (the same folding as the lexicon, so disguises fold away) and
reported with the span of each cue in the original text, like a lexicon match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.text.normalize import fold, normalize

CUES_FILE = Path(__file__).resolve().parents[2] / "data" / "cues.yaml"


@dataclass(frozen=True)
class Combination:
    rule: str
    severity: str
    groups: tuple[tuple[str, re.Pattern[str]], ...]  # every one must match
    unless: re.Pattern[str] | None  # none of these may


def _alternation(patterns: list[str], where: str) -> re.Pattern[str]:
    try:
        return re.compile("|".join(f"(?:{p})" for p in patterns))
    except re.error as exc:
        raise ValueError(f"{CUES_FILE.name}: {where}: bad regular expression: {exc}") from None


@lru_cache(maxsize=1)
def combinations() -> tuple[Combination, ...]:
    data = yaml.safe_load(CUES_FILE.read_text(encoding="utf-8"))
    out = []
    for rule, spec in data.items():
        groups = tuple((name, _alternation(pats, f"{rule}.all.{name}")) for name, pats in spec.get("all", {}).items())
        unless = _alternation(spec["unless"], f"{rule}.unless") if spec.get("unless") else None
        out.append(Combination(rule, spec.get("severity", "medium"), groups, unless))
    return tuple(out)


def find_combinations(text: str, folded: str | None = None, hits: dict[str, dict[str, str]] | None = None,
                      talked: set[str] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(rule, severity, evidence item) for each combination the text completes. The item names each
    cue: {"combination": {group: {"text", "span", "normalized"}}}. `hits` and `talked`: the text's
    `cue_hits` and `discussed`, when already known."""
    folded = fold(text) if folded is None else folded
    hits = cue_hits(folded) if hits is None else hits
    talked = discussed(folded) if talked is None else talked
    found = []
    for combo in combinations():
        if not combo.groups:
            continue  # a rule with only `unless`: how its subject is discussed (see `discussed`)
        if combo.rule in talked or len(hits.get(combo.rule, ())) < len(combo.groups):
            continue
        norm = normalize(text)  # only on a hit: the offsets back into the original
        cues: dict[str, Any] = {}
        for name, pattern in combo.groups:
            m = pattern.search(norm.text)
            if m is None:  # folded and normalised text agree; kept for safety
                break
            start, end = norm.span(*m.span())
            cues[name] = {"text": text[start:end], "span": [start, end], "normalized": m.group(0)}
        else:
            found.append((combo.rule, combo.severity, {"combination": cues}))
    return found


def cue_hits(folded: str) -> dict[str, dict[str, str]]:
    """Per combination rule, the groups this (folded) text has a cue of, and the cue as matched:
    one sender's consecutive messages are read together (`ContentDetector`, within the split window)."""
    out: dict[str, dict[str, str]] = {}
    for combo in combinations():
        found = {name: m.group(0) for name, pattern in combo.groups if (m := pattern.search(folded))}
        if found:
            out[combo.rule] = found
    return out


@lru_cache(maxsize=16)
def _group(rule: str, name: str) -> re.Pattern[str]:
    combo = next(c for c in combinations() if c.rule == rule)
    return dict(combo.groups)[name]


def cue(rule: str, name: str, folded: str) -> str | None:
    """One group's cue in a (folded) text, as matched, or None: for a rule that needs only that
    group (member.impersonation: the fraud `request`), without searching every other group."""
    m = _group(rule, name).search(folded)
    return m.group(0) if m else None


def needs(rule: str) -> tuple[str, ...]:
    """The groups a combination rule needs."""
    return next((tuple(n for n, _ in c.groups) for c in combinations() if c.rule == rule), ())


def discussed(folded: str) -> set[str]:
    """The rules whose subject the text talks about rather than does (a warning about scams, a plan
    for a red-packet campaign): their `unless` matches. Such a text is no finding of those rules at
    all, not even for the single terms it names (冒充领导, 安全账户 in 反诈提醒)."""
    return {c.rule for c in combinations() if c.unless is not None and c.unless.search(folded)}
