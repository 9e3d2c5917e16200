"""Text that came from outside, made safe to record and to echo.

PostgreSQL ``text`` cannot hold NUL, and a lone surrogate cannot be encoded
as UTF-8 at all: either in a refusal row would fail the very insert that
records the refusal (and answer 500). Control characters in a log line or a
problem document can also forge lines or hide text. Every such character is
written as an escape (``\\x00``, ``\\u202e`` stays: it is printable; ``\\ud800``)
instead.
"""

from __future__ import annotations

import re

#: C0 and C1 controls, DEL, and lone surrogates.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escaped(value: object, limit: int | None = None) -> str:
    """``value`` as text with every control character and lone surrogate escaped, at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if _UNSAFE.search(text):
        text = _UNSAFE.sub(_escape, text)
    return text if limit is None else text[:limit]


def has_control_characters(value: str) -> bool:
    return _UNSAFE.search(value) is not None
