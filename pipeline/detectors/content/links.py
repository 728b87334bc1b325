"""Links outside the org's allowed domains (content.link), from the `urls` field and the text."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

URL = re.compile(
    r"(?i)\b((?:https?://|www\.)[^\s<>\"'，。！？、；：“”‘’（）【】《》]+"
    r"|[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:com|cn|net|org|top|xyz|vip|cc|io|me|info|biz|club|shop|site|link|ly)"
    r"(?:/[^\s<>\"'，。！？、；：“”‘’（）【】《》]*)?)(?![\w@.])")


def domain_of(url: str) -> str:
    raw = url if "://" in url else "http://" + url
    try:
        host = urlsplit(raw).hostname or ""
    except ValueError:
        return ""
    return host.lower().rstrip(".")


def allowed(domain: str, allow: Iterable[str]) -> bool:
    return any(domain == a or domain.endswith("." + a) for a in allow)


def find_links(text: str, urls: Iterable[str]) -> list[tuple[str, str, tuple[int, int] | None]]:
    """(url, domain, span in text or None) for every link, each once."""
    seen: set[str] = set()
    out: list[tuple[str, str, tuple[int, int] | None]] = []
    if "." in text:
        for m in URL.finditer(text):
            url = m.group(1).rstrip(".,)")
            if "@" in text[max(0, m.start() - 1):m.start()]:
                continue  # the domain of an e-mail address, not a link
            if url not in seen:
                seen.add(url)
                out.append((url, domain_of(url), m.span(1)))
    for url in urls:
        if url not in seen:
            seen.add(url)
            out.append((url, domain_of(url), None))
    return [x for x in out if x[1]]
