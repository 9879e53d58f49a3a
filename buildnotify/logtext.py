"""Text from outside (names, URLs, error messages) made safe for one log line."""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def printable(text: object, limit: int = 200) -> str:
    """``text`` on one line: control characters, lone surrogates and line
    separators escaped (a log line cannot be forged or split), cut to
    ``limit`` characters."""
    value = text if isinstance(text, str) else repr(text)
    if len(value) > limit:
        value = value[:limit] + "..."
    return _UNPRINTABLE.sub(
        lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), value
    )
