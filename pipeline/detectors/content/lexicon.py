"""The categorised lexicon: the data files in pipeline/data/lexicon, plus the policy's own files,
additions, removals and allowed phrases. One automaton per distinct lexicon setting, built once.

Default files are one category each (`gambling.tsv`): `term[<TAB>severity[<TAB>flags]]`, with
`# severity: X` as the file's default. An org's files name the category first:
`category<TAB>term[<TAB>severity[<TAB>flags]]`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pipeline.config import ConfigError
from pipeline.policy import CATEGORIES, Lexicon, resolve
from pipeline.text.matcher import Matcher, Term
from pipeline.text.normalize import normalize_term
from schemas.records import SEVERITIES

DATA = Path(__file__).resolve().parents[2] / "data" / "lexicon"
# (files, sorted additions, removals, allowed phrases, base dir): a Lexicon, hashable for the cache
_Key = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...], tuple[str, ...], Path]


def read_terms(path: Path, category: str | None = None) -> list[Term]:
    """Terms of one lexicon file; `category=None` for an org file whose lines name their category."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy: lexicon file {path}: cannot read: {exc}") from None
    default = "medium"
    terms = []
    for n, line in enumerate(lines, 1):
        if line.startswith("# severity:"):
            default = line.split(":", 1)[1].strip()
            continue
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        cat = category or parts.pop(0)
        if cat not in CATEGORIES:
            raise ConfigError(f"policy: lexicon file {path}:{n}: unknown category {cat!r} "
                              f"(one of {', '.join(CATEGORIES)})")
        severity = parts[1] if len(parts) > 1 and parts[1] else default
        if severity not in SEVERITIES:
            raise ConfigError(f"policy: lexicon file {path}:{n}: severity {severity!r} is not one of "
                              f"{', '.join(SEVERITIES)}")
        flags = parts[2] if len(parts) > 2 else ""
        terms.append(Term(parts[0], cat, severity, "b" in flags, "a" in flags))
    return terms


def _phrases(name: str) -> list[str]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [s.strip() for s in lines if s.strip() and not s.startswith("#")]


# Clauses end at punctuation; 、 does not end one: 不得发布赌博、色情、暴力 is one prohibition.
CLAUSE_END = re.compile(r"[，。！？；：,.!?;:\n]")
# A hit that closes an enumeration ending in 等 or 色彩 names a category (赌博、色情等不良信息,
# 具有色情色彩的) rather than posting it; 等你来, 等一下 and the like are not that 等.
NAMING = re.compile(r"^(?:、[^，。！？；：,.!?;:\n、]{1,10})*(?:等(?![你我他她着待一会])|色彩)")


@lru_cache(maxsize=1)
def _cues() -> tuple[str, ...]:
    return tuple(_phrases("prohibit.txt"))


def is_reminder(text: str, start: int, end: int) -> bool:
    """Whether a hit at text[start:end] is the rule talking, not a post breaking it: its clause
    states a prohibition before it (请勿在群里发红包), or it names a category in a list (赌博、色情等)."""
    head = CLAUSE_END.split(text[:start])[-1]
    if any(cue in head for cue in _cues()):
        return True
    return NAMING.match(text[end:]) is not None


def matcher_for(lexicon: Lexicon, base_dir: Path) -> Matcher:
    """The automaton for this lexicon setting; built once per distinct setting in a process."""
    key = (lexicon.files, tuple(sorted(lexicon.add.items())), lexicon.remove, lexicon.allow, base_dir)
    return _build(key)


@lru_cache(maxsize=64)
def _build(key: _Key) -> Matcher:
    files, add, remove, allow, base_dir = key
    lexicon = Lexicon(files=files, add=dict(add), remove=remove, allow=allow)
    terms = [t for cat in CATEGORIES for t in read_terms(DATA / f"{cat}.tsv", cat)]
    for f in lexicon.files:
        terms.extend(read_terms(resolve(base_dir, f)))
    for cat, added in lexicon.add.items():
        terms.extend(Term(t, cat, "medium") for t in added)
    removed = {normalize_term(t) for t in lexicon.remove}
    terms = [t for t in terms if normalize_term(t.term) not in removed]
    return Matcher(terms, _phrases("allow.txt") + list(lexicon.allow), splits=read_splits())


@lru_cache(maxsize=1)
def read_splits() -> dict[str, str]:
    """character → its parts (splits.tsv)."""
    out = {}
    for n, line in enumerate((DATA / "splits.tsv").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        char, _, parts = line.partition("\t")
        if len(char) != 1 or len(parts) < 2:
            raise ValueError(f"{DATA / 'splits.tsv'}:{n}: expected a character, a tab and its parts")
        out[char] = parts.strip()
    return out


# Swearing into the air (他妈的又堵车, 卧槽) is rude, not an insult: terms flagged `a` count only where
# the message speaks to someone.
AIMED = re.compile(r"[你您尼]|@\S")


def is_aimed(text: str) -> bool:
    return bool(AIMED.search(text))
