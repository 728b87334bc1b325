"""Personal data in a message (content.pii): mobile numbers, ID-card numbers (with their checksum),
bank-card numbers (with the Luhn check), e-mail addresses, home addresses down to the flat.

Checksums keep order numbers and invoice codes out; a mobile number introduced as a business's
(订餐电话, 前台, 客服热线) is its contact, not a person's data; evidence masks the value, so the finding does
not spread what it reports.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

MOBILE = re.compile(r"(?<![\d.])(?:\+?86[\s-]?)?(1[3-9]\d(?:[\s-]?\d){8})(?![\d])")
ID_CARD = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx])(?![0-9A-Za-z])")
BANK_CARD = re.compile(r"(?<![\d])((?:[3-6]\d{3})(?:[\s-]?\d{4}){2,3}(?:[\s-]?\d{1,3})?)(?![\d])")
EMAIL = re.compile(r"(?<![\w.+-])([\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
ADDRESS = re.compile(
    r"([\u4e00-\u9fff]{1,8}(?:省|市|区|县|镇)[\u4e00-\u9fff\d]{0,16}?(?:路|街|道|巷|弄|村|小区|花园|公寓)"
    r"[\u4e00-\u9fff\d-]{0,10}?\d+号(?:院|楼)?[\s,，]*\d+(?:栋|幢|号楼|单元|室|层|楼|房)(?:[\d\u4e00-\u9fff]{0,8}(?:室|房))?)")

# A number introduced as a business's (订餐电话, 前台, 客服热线 …) is that business's contact, not a
# person's data: a shop's number in a group is an advert or a service, for the other rules to judge.
BUSINESS = re.compile(r"(店|订餐|订座|外卖|热线|客服|前台|总机|服务电话|咨询电话|预约电话|营业|商家|酒店|餐厅|饭店|"
                      r"公司|物业|快递|维修|售后)[^\d。！？!?]{0,6}$")
BUSINESS_BEFORE = 12  # characters before a number where its introduction is looked for
_DIGIT = re.compile(r"\d")
_HINT = re.compile(r"[\d@]")  # no digit and no @: no personal data of any kind here
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


@dataclass(frozen=True)
class Personal:
    kind: str  # mobile, id_card, bank_card, email, address
    start: int
    end: int
    masked: str


def id_card_valid(number: str) -> bool:
    number = unicodedata.normalize("NFKC", number).upper()  # full-width digits are a disguise too
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    if _ID_CHECK[total % 11] != number[17]:
        return False
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date(2100, 1, 1)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _mask(value: str, keep: int = 3) -> str:
    """Keep `keep` characters at each end, star the rest (all of it when too short to keep any)."""
    if keep <= 0 or len(value) <= 2 * keep:
        return "*" * len(value)
    return value[:keep] + "*" * (len(value) - 2 * keep) + value[-keep:]


def find_personal(text: str) -> list[Personal]:
    if not text or not _HINT.search(text):
        return []
    out: list[Personal] = []

    def add(kind: str, m: re.Match[str], masked: str) -> None:
        s, e = m.span(1)
        if not any(p.start < e and s < p.end for p in out):  # a digit run is one kind of data
            out.append(Personal(kind, s, e, masked))

    if _DIGIT.search(text):
        for m in ID_CARD.finditer(text):
            if id_card_valid(m.group(1)):
                add("id_card", m, _mask(m.group(1), 4))
        for m in BANK_CARD.finditer(text):
            digits = unicodedata.normalize("NFKC", re.sub(r"\D", "", m.group(1)))
            if 16 <= len(digits) <= 19 and luhn_valid(digits):
                add("bank_card", m, _mask(digits, 4))
        for m in MOBILE.finditer(text):
            if not BUSINESS.search(text[max(0, m.start() - BUSINESS_BEFORE):m.start()]):
                add("mobile", m, _mask(re.sub(r"\D", "", m.group(1))))
        if "号" in text:
            for m in ADDRESS.finditer(text):
                add("address", m, _mask(m.group(1), 4))
    if "@" in text:
        for m in EMAIL.finditer(text):
            local, _, domain = m.group(1).partition("@")
            add("email", m, _mask(local, 1) + "@" + domain)
    return sorted(out, key=lambda p: p.start)


KEEP = {"id_card": 4, "bank_card": 4, "mobile": 3, "address": 4, "email": 1}  # characters kept at each end


def mask_text(text: str, kinds: Collection[str]) -> str:
    """`text` with the personal data of `kinds` masked in place: the same length, so the spans a
    finding's evidence points at still point at the same place (separators kept, e-mail domains
    kept, `keep` characters at each end as the evidence's masked form shows them)."""
    if not kinds or not text or not _HINT.search(text):
        return text
    chars = list(text)
    for p in find_personal(text):
        if p.kind not in kinds:
            continue
        end = p.end if p.kind != "email" else text.index("@", p.start)
        at = [i for i in range(p.start, end) if chars[i].isalnum()]
        keep = KEEP[p.kind] if len(at) > 2 * KEEP[p.kind] else 0
        for i in at[keep:len(at) - keep]:
            chars[i] = "*"
    return "".join(chars)
