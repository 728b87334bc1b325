"""jieba tokenization: the dictionary is loaded once per process, org terms can be added.

Work-group chatter repeats itself (收到, 好的, the same notice forwarded), so results are cached by
text; the cache is what lets a worker keep up with jieba's ~17k messages/s on real traffic.

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
        self._cached = lru_cache(maxsize=cache_size or None)(self._tokenize) if cache_size else self._tokenize

    def add_terms(self, terms: Iterable[str]) -> None:
        """Org vocabulary (product names, department names) that jieba must keep whole."""
        for term in terms:
            self._jieba.add_word(term)
        if hasattr(self._cached, "cache_clear"):
            self._cached.cache_clear()

    def _tokenize(self, text: str) -> tuple[str, ...]:
        # NFKC folds full-width letters and digits, so ＶＩＰ and VIP index the same way.
        text = unicodedata.normalize("NFKC", text)
        return tuple(t for t in self._jieba.lcut(text, HMM=self.hmm) if not t.isspace())

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
