"""Lexicon matching over normalised text: one Aho-Corasick automaton, built once per lexicon.

- Terms and texts go through the same `normalize`, so 賭*博 meets 赌博; a match reports the span
  of the original text and the normalised form that matched.
- Short, ambiguous terms (`boundary=True`) count only where jieba's words of the normalised text
  agree: whole words, or inside one word built on the term (黄色 in 黄色图片), never straddling two
  words (口交 is not in 路口/交通).
- Allow-list entries name harmless contexts: a hit that lies inside an allowed phrase (黄色 inside
  黄色预警) is suppressed.
- Terms are also matched with their characters split into parts (氵去 for 法; `splits`, from
  pipeline/data/lexicon/splits.tsv), the span pointing at the parts the member wrote.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ahocorasick

from pipeline.text.normalize import fold, normalize, normalize_term
from pipeline.text.tokenize import get_tokenizer


@dataclass(frozen=True)
class Term:
    term: str
    category: str
    severity: str = "medium"
    boundary: bool = False
    aimed: bool = False  # counts only where the message speaks to someone (你, 您, @)


@dataclass(frozen=True)
class Match:
    term: Term
    start: int  # span in the original text
    end: int
    normalized: str


def split_forms(key: str, splits: Mapping[str, str], most: int = 4) -> list[str]:
    """A normalised term written with some of its characters split into their parts (氵去轮功,
    氵去轮工力 …): every choice of splittable characters, or, beyond `most` of them, all at once
    and each one alone."""
    at = [i for i, c in enumerate(key) if c in splits]
    if len(at) > most:
        choices = [at] + [[i] for i in at]
    else:
        choices = [[i for b, i in enumerate(at) if mask >> b & 1] for mask in range(1, 1 << len(at))]
    return ["".join(splits[c] if i in chosen else c for i, c in enumerate(key)) for chosen in choices]


class Matcher:
    def __init__(self, terms: Iterable[Term], allow: Iterable[str] = (),
                 splits: Mapping[str, str] | None = None) -> None:
        self._auto = ahocorasick.Automaton()
        entries: dict[str, list[tuple[str, Term | str]]] = {}
        for t in terms:
            key = normalize_term(t.term)
            if not key:
                continue
            # A short term that needs jieba's agreement is not split: its parts would be ordinary text.
            forms = [key] + ([normalize_term(f) for f in split_forms(key, splits)] if splits and not t.boundary else [])
            for form in forms:
                if ("term", t) not in entries.get(form, ()):  # the same term from two sources, once
                    entries.setdefault(form, []).append(("term", t))
        for phrase in allow:
            key = normalize_term(phrase)
            if key:
                entries.setdefault(key, []).append(("allow", phrase))
        for key, values in entries.items():
            self._auto.add_word(key, (key, values))
        self.size = len(entries)
        self.max_len = max((len(k) for k, v in entries.items() if any(kind == "term" for kind, _ in v)), default=0)
        if entries:
            self._auto.make_automaton()

    def scan(self, folded: str) -> tuple[list[tuple[int, int, Term]], list[tuple[int, int]]]:
        """Raw hits and allowed spans in already-normalised text (no word or allow-list checks)."""
        hits: list[tuple[int, int, Term]] = []
        allowed: list[tuple[int, int]] = []
        if self.size and folded:
            for end_idx, (key, values) in self._auto.iter(folded):
                start = end_idx - len(key) + 1
                for kind, value in values:
                    if kind == "allow":
                        allowed.append((start, end_idx + 1))
                    else:
                        hits.append((start, end_idx + 1, value))
        return hits, allowed

    def find(self, text: str, folded: str | None = None) -> list[Match]:
        """Matches in `text`; pass `folded` = fold(text) when already computed."""
        if not self.size or not text:
            return []
        # Most messages match nothing: decide on the cheap folded text, map offsets only on a hit.
        if not self.scan(fold(text) if folded is None else folded)[0]:
            return []
        norm = normalize(text)
        hits, allowed = self.scan(norm.text)
        ends: list[int] | None = None
        out: list[Match] = []
        for start, end, term in hits:
            if any(a <= start and end <= b for a, b in allowed):
                continue
            if term.boundary:
                if ends is None:
                    ends = _token_ends(norm.text)
                if not _on_words(norm.text, start, end, ends):
                    continue
            s, e = norm.span(start, end)
            out.append(Match(term, s, e, norm.text[start:end]))
        return out


def _token_ends(text: str) -> list[int]:
    pos, out = 0, []
    for tok in get_tokenizer().tokens(text):
        pos += len(tok)
        out.append(pos)
    return out


def _on_words(text: str, start: int, end: int, ends: list[int]) -> bool:
    """Whole tokens (start and end on boundaries), or inside one token that is a compound of the
    term (黄色 in 黄色图片; terms of one character never); not straddling tokens (口交 in 路口|交通)."""
    bounds = {0, *ends}
    if start in bounds and end in bounds:
        return True
    if text[start:end].isascii():
        return False  # a Latin term is a whole word or nothing: sb is not in usb
    first = bisect_right(ends, start)  # index of the token holding `start`
    return end - start >= 2 and first < len(ends) and end <= ends[first]
