"""Text from outside (names, URLs, error messages) made safe for one log line."""

from __future__ import annotations

#: how much of one outside value a log line shows
LOG_LIMIT = 300


def printable(value: object, limit: int = LOG_LIMIT) -> str:
    """``value`` on one line: anything unprintable (control and format
    characters, line separators, lone surrogates) escaped as ``\\n``,
    ``\\x00``, ``\\ud800``, so a log line cannot be forged or split; cut to
    ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
