"""Real-name formats for group nicknames (群成员一律实名制): templates from the policy, matched
against a member's roster entry.

A template is text with fields: `{name}` and `{department}` are the member's roster values, any
other `{field}` is free text (a subject, a student's name); `a/b` in the text is either; `-` stands
for any separator (- － — _ · space). `{department}-{name}` accepts 技术中心-张伟 and 技术中心 张伟;
`{department}{name}` accepts 行政中心何锐; `{student}爸爸/妈妈` accepts 王小明妈妈.
Nicknames are compared after NFKC (full-width letters and digits fold to half-width) and case folding.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

SEPARATORS = "-－—_·•\\s"
FREE = f"[^{SEPARATORS}]{{1,20}}?"
_FIELD = re.compile(r"\{(\w+)\}")


def clean(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


@lru_cache(maxsize=256)
def compile_template(template: str) -> tuple[tuple[str, str], ...]:
    """The template as parts: ("field", name) or ("text", regex). ValueError when it is unusable."""
    if not template.strip():
        raise ValueError("an empty nickname template")
    parts: list[tuple[str, str]] = []
    pos = 0
    for m in _FIELD.finditer(template):
        if m.start() > pos:
            parts.append(("text", _literal(template[pos:m.start()])))
        parts.append(("field", m.group(1)))
        pos = m.end()
    if pos < len(template):
        parts.append(("text", _literal(template[pos:])))
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        raise ValueError(f"{template!r}: a field is written {{name}}, {{department}} or {{any_word}}")
    return tuple(parts)


def _literal(text: str) -> str:
    """Literal text: `a/b` is either, a separator character is any separator."""
    alternatives = []
    for alt in text.split("/"):
        out = []
        for ch in clean(alt) if alt.strip() else alt:
            out.append(f"[{SEPARATORS}]+" if re.match(f"[{SEPARATORS}]", ch) else re.escape(ch))
        alternatives.append("".join(out))
    return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"


@lru_cache(maxsize=65_536)
def _regex(template: str, name: str, department: str) -> re.Pattern[str] | None:
    """The template filled in for one person; None when it needs a roster value we do not have."""
    out = []
    for kind, part in compile_template(template):
        if kind == "text":
            out.append(part)
        elif part == "name":
            if not name:
                return None
            out.append(re.escape(clean(name)))
        elif part == "department":
            out.append(re.escape(clean(department)) if department else FREE)
        else:
            out.append(FREE)
    return re.compile("".join(out))


def conforms(nickname: str, templates: tuple[str, ...], name: str | None, department: str | None) -> bool | None:
    """Whether the nickname follows the group's format: True, False, or None when it cannot be told
    (no roster entry for a format that names the person)."""
    nick = clean(nickname)
    if not templates:
        return None if not name else clean(name) in nick
    known = False
    for t in templates:
        rx = _regex(t, name or "", department or "")
        if rx is None:
            continue
        known = True
        if rx.fullmatch(nick):
            return True
    return False if known else None
