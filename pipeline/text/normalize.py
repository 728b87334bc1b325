"""Normalisation for matching, with a map from every normalised character back to the original.

What members do to slip past a filter, and what undoes it:
- full-width letters and digits, circled digits (ＶＩＰ, ①)  → NFKC, per character
- upper case                                               → lower case
- traditional characters (賭博)                             → simplified, character by character
  (OpenCC's TSCharacters table: phrase-level conversion could change the length and lose the map)
- zero-width characters, spaces, symbols between characters (赌*博, 赌 博, 赌\u200b博)  → dropped
- repeated characters (赌赌赌博博)                             → one (digits are kept: 13800138000)

Lexicon terms go through the same function, so a term and its disguises meet in the same form.
`Normalized.span(i, j)` turns a match in the normalised text into the span of the original text
that findings report.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\ufeff\u00ad\u180e")


@lru_cache(maxsize=1)
def t2s_table() -> dict[str, str]:
    import opencc

    path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
    table: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        trad, _, simp = line.partition("\t")
        if len(trad) == 1 and simp:
            target = simp.split()[0]
            if len(target) == 1 and target != trad:
                table[trad] = target
    return table


@dataclass(frozen=True)
class Normalized:
    text: str
    offsets: tuple[int, ...]  # offsets[i]: index in the original of the character behind text[i]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) of the normalised slice text[start:end]."""
        return self.offsets[start], self.offsets[end - 1] + 1


@lru_cache(maxsize=65_536)
def _fold(c: str) -> str:
    """One original character → its normalised characters ('' when it is dropped)."""
    if c in ZERO_WIDTH:
        return ""
    out = []
    t2s = t2s_table()
    for d in unicodedata.normalize("NFKC", c).lower():
        d = t2s.get(d, d)
        if d.isalnum():
            out.append(d)
    return "".join(out)


def normalize(text: str) -> Normalized:
    chars: list[str] = []
    offsets: list[int] = []
    last = ""
    for i, c in enumerate(text):
        for d in _fold(c):
            if d == last and not d.isdigit():
                continue
            chars.append(d)
            offsets.append(i)
            last = d
    return Normalized("".join(chars), tuple(offsets))


def normalize_term(term: str) -> str:
    return normalize(term).text


class _FoldTable(dict[int, str]):
    """str.translate table filled on first sight of each character (C-speed lookups after that)."""

    def __missing__(self, code: int) -> str:
        folded = _fold(chr(code))
        self[code] = folded
        return folded


_TABLE = _FoldTable()
_REPEATS = re.compile(r"(\D)\1+")


def _first(m: re.Match[str]) -> str:
    return m.group(1)


@lru_cache(maxsize=65_536)  # chat repeats itself (收到, 好的): several rules fold the same text
def fold(text: str) -> str:
    """`normalize(text).text` without the offset map: the hot path, for texts that match nothing."""
    return _REPEATS.sub(_first, text.translate(_TABLE))
