"""Notices that ask for a reply, and the acknowledgements that answer them (SPEC §4).

The phrases live in pipeline/data/notice.yaml and are compared after `fold`, so 回复"收到",
回复『收到』 and 囘復收到 are one cue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.text.normalize import fold

PHRASES_FILE = Path(__file__).resolve().parent.parent / "data" / "notice.yaml"


@dataclass(frozen=True)
class Phrases:
    asks: tuple[str, ...]
    no_reply: tuple[str, ...]
    acks: frozenset[str]
    ack_prefixes: tuple[str, ...]
    ack_max_chars: int


@lru_cache(maxsize=1)
def phrases() -> Phrases:
    data = yaml.safe_load(PHRASES_FILE.read_text(encoding="utf-8"))

    def folded(key: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fold(str(p)) for p in data[key]))

    return Phrases(folded("asks"), folded("no_reply"), frozenset(folded("acks")), folded("ack_prefixes"),
                   int(data["ack_max_chars"]))


@lru_cache(maxsize=1)
def _cues() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The phrases as two alternations: one search instead of a `in` per phrase (every message
    is asked, by the flood and deadline detectors)."""
    p = phrases()
    return (re.compile("|".join(map(re.escape, p.asks))), re.compile("|".join(map(re.escape, p.no_reply))))


def asks_reply(text: str, folded: str | None = None) -> bool:
    f = fold(text) if folded is None else folded
    asks, no_reply = _cues()
    return asks.search(f) is not None and no_reply.search(f) is None


def is_ack(text: str, folded: str | None = None) -> bool:
    f = fold(text) if folded is None else folded
    if not f:
        return False
    p = phrases()
    if f in p.acks:
        return True
    return (len(f) <= p.ack_max_chars and f.startswith(p.ack_prefixes)
            and not asks_reply(text, f))
