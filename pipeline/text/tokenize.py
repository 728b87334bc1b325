"""jieba tokenization: the dictionary is loaded once per process, org terms can be added.

Work-group chatter repeats itself (收到, 好的, the same notice forwarded), and so do its phrases
(各位, 辛苦了, 请大家, a colleague's name) inside texts that differ. jieba cuts a text as runs of
letters and digits (`re_han_default`) between punctuation and spaces, each run on its own, and the
cut of a run depends on that run alone. So this tokenizer does what `jieba.cut` does, with the
backend's own regexes and block cutter, and remembers the cut of each run: the tokens are jieba's
exactly (tests/test_tokenize.py compares them on the simulator's traffic, the lexicons and the
corpora), and a text whose runs were all seen before costs a split and a few lookups. Whole texts
are cached too. How much this saves depends on how repetitive the traffic is: the simulator's
181,087 message texts hold 382,811 runs of only 3,280 distinct ones; a corpus of distinct prose
(the policy documents) gains nothing.

Two backends with one algorithm: jieba (the default) and `jieba_fast` (PyPI jieba-fast, jieba's
code with its hot loops in C, the `fast` extra; it needs a C compiler to install), chosen by
`tokenizer.backend`. Measured (tests/test_tokenize.py): the two cut differently only where jieba's
model scores two cuts exactly alike (啪啪|啪 or 啪|啪啪: jieba keeps the longer last word, the C
loop the first), 11 of 16,404 texts of the simulator, the lexicon and the corpora; 1.8x the
speed of jieba on them (18,964 against 10,419 texts/s, one run, the CI suite beside it). A
boundary term on such a run can then match in one place and not the other, so `auto` means jieba,
and a worker set to jieba_fast needs replay set alike (replay reads the same `tokenizer` config).
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jieba

_lock = threading.Lock()
_instance: Tokenizer | None = None

jieba.setLogLevel(logging.WARNING)


def backend_module(backend: str = "auto") -> Any:  # jieba and jieba_fast are untyped
    """jieba_fast when asked for; jieba for `auto` and `jieba` (why: the module's docstring)."""
    if backend != "jieba_fast":
        return jieba
    try:
        import jieba_fast  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        raise RuntimeError("tokenizer.backend: jieba_fast is not installed "
                           "(pip install 'qunguard[fast]', which needs a C compiler)") from None
    jieba_fast.setLogLevel(logging.WARNING)
    return jieba_fast


class Tokenizer:
    def __init__(self, hmm: bool = False, user_dict: str | None = None, cache_size: int = 200_000,
                 backend: str = "auto") -> None:
        module = backend_module(backend)
        self.backend = module.__name__
        self._jieba: Any = module.Tokenizer()
        self._jieba.initialize()
        if user_dict:
            self._jieba.load_userdict(user_dict)
        self.hmm = hmm
        # jieba.Tokenizer.cut's own parts (jieba 0.42 and jieba-fast 0.53 alike): the regex that
        # splits a text into runs, and the run cutter of this HMM setting (name-mangled, private).
        self._han = module.re_han_default
        self._cut_block = getattr(self._jieba, "_Tokenizer__cut_DAG" if hmm else "_Tokenizer__cut_DAG_NO_HMM")
        self._block_size = cache_size
        self._blocks: dict[str, tuple[str, ...]] = {}
        self._cached = lru_cache(maxsize=cache_size or None)(self._tokenize) if cache_size else self._tokenize

    def add_terms(self, terms: Iterable[str]) -> None:
        """Org vocabulary (product names, department names) that jieba must keep whole."""
        for term in terms:
            self._jieba.add_word(term)
        self._blocks.clear()
        if hasattr(self._cached, "cache_clear"):
            self._cached.cache_clear()

    def _tokenize(self, text: str) -> tuple[str, ...]:
        """`jieba.lcut(text)` without spaces, run by run (the module's docstring)."""
        # NFKC folds full-width letters and digits, so ＶＩＰ and VIP index the same way.
        text = unicodedata.normalize("NFKC", text)
        out: list[str] = []
        blocks = self._blocks
        for blk in self._han.split(text):
            if not blk:
                continue
            if self._han.match(blk):
                words = blocks.get(blk)
                if words is None:
                    words = tuple(self._cut_block(blk))
                    if self._block_size:
                        if len(blocks) >= self._block_size:
                            blocks.pop(next(iter(blocks)), None)  # oldest first: dicts keep insertion order
                        blocks[blk] = words
                out.extend(words)
            else:  # punctuation and spaces: jieba yields them one character at a time
                out.extend(c for c in blk if not c.isspace())
        return tuple(out)

    def spans(self, text: str) -> list[tuple[str, int, int]]:
        """(word, start, end) over the text as written, for offsets into it (not cached)."""
        return [(w, s, e) for w, s, e in self._jieba.tokenize(text, HMM=self.hmm) if not w.isspace()]

    def tokens(self, text: str) -> list[str]:
        if not text:
            return []
        return list(self._cached(text))


def get_tokenizer(hmm: bool = False, user_dict: str | None = None, cache_size: int = 200_000,
                  backend: str = "auto") -> Tokenizer:
    """The process-wide tokenizer (jieba's dictionary takes about a second to load)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Tokenizer(hmm=hmm, user_dict=user_dict, cache_size=cache_size, backend=backend)
        return _instance
