"""Constrained text types: length limits and the characters each field allows.

Names may use the administrative standard character set (行政事務標準文字,
MJ+), which goes far beyond JIS X 0208: all CJK unified ideograph blocks
(including the supplementary planes), compatibility ideographs and ideographic
variation selectors are allowed. Control characters, emoji, symbols and
anything else are refused, at every boundary.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, StrictStr

_KANA = "\u3041-\u309f\u30a0-\u30ff\u31f0-\u31ff"
_IDEOGRAPHS = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002ebef\U00030000-\U000323af\U0002f800-\U0002fa1f"
    "\u3005\u3006\u3007"  # 々 〆 〇
    "\U000e0100-\U000e01ef"  # ideographic variation selectors (MJ glyphs)
)
_LATIN = "A-Za-z\uff21-\uff3a\uff41-\uff5a\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff"  # letters; not × ÷
_NAME_PUNCT = " \u3000'\\-.,\u30fb\u30fc"  # spaces, apostrophe, hyphen, dot, comma, ・ ー
_DIGITS = "0-9\uff10-\uff19"
_ADDRESS_PUNCT = _NAME_PUNCT + "\u2010\uff0d\u2212/()\uff08\uff09#\u3001\u3002\u30f6\u30b1"

NAME_PATTERN = re.compile(f"^[{_KANA}{_IDEOGRAPHS}{_LATIN}{_NAME_PUNCT}]+$")
KANA_PATTERN = re.compile("^[\u30a1-\u30fa\u30fc\u30fb \u3000]+$")
ADDRESS_PATTERN = re.compile(f"^[{_KANA}{_IDEOGRAPHS}{_LATIN}{_DIGITS}{_ADDRESS_PUNCT}]+$")
_STRAY_VARIATION_SELECTOR = re.compile("(?:^|(?<=[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U000323af\U0002f800-\U0002fa1f]))[\U000e0100-\U000e01ef]")
FREE_TEXT_PATTERN = re.compile(f"^[{_KANA}{_IDEOGRAPHS}{_LATIN}{_DIGITS}{_ADDRESS_PUNCT}:;!?\u3001\u3002\u300c\u300d]+$")


def _charset(pattern: re.Pattern[str], what: str):
    def validate(value: str) -> str:
        if not pattern.match(value):
            bad = sorted({c for c in value if not pattern.match(c)})
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
            raise ValueError(f"{what} contains characters outside the allowed set ({shown})")
        if _STRAY_VARIATION_SELECTOR.search(value):
            raise ValueError(f"{what} has a variation selector that does not follow an ideograph")
        if value != value.strip():
            raise ValueError(f"{what} has leading or trailing spaces")
        return value

    return validate


NameText = Annotated[StrictStr, Field(min_length=1, max_length=60), AfterValidator(_charset(NAME_PATTERN, "name"))]
KanaText = Annotated[StrictStr, Field(min_length=1, max_length=120), AfterValidator(_charset(KANA_PATTERN, "furigana (katakana)"))]
AddressText = Annotated[StrictStr, Field(min_length=1, max_length=200), AfterValidator(_charset(ADDRESS_PATTERN, "address"))]
ReasonText = Annotated[StrictStr, Field(min_length=1, max_length=400), AfterValidator(_charset(FREE_TEXT_PATTERN, "text"))]
LabelText = Annotated[StrictStr, Field(min_length=1, max_length=60), AfterValidator(_charset(FREE_TEXT_PATTERN, "text"))]
ShortCode = Annotated[StrictStr, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
PostalCode = Annotated[StrictStr, Field(pattern=r"^[0-9]{7}$")]

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_date_only(value: object) -> object:
    """Dates cross boundaries as ISO strings; numbers and other shapes are refused."""
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]
