"""What one attempt came to, and when to try again: exponential backoff with
jitter, or the receiver's ``Retry-After`` (seconds or an HTTP date)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

SENT, RETRY, DEAD = "sent", "retry", "dead"
#: the first retry waits about this many seconds; each later one twice as long ...
BACKOFF_BASE = 10.0
#: ... up to this
BACKOFF_CAP = 3600.0
#: a longer Retry-After is read as this (a message gives up within a day by default anyway)
RETRY_AFTER_CAP = 7 * 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    kind: str  # SENT, RETRY or DEAD
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait


def backoff(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling
    from BACKOFF_BASE to BACKOFF_CAP, each drawn from its upper half (jitter,
    so that messages that failed together do not all come back together)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return ceiling * (0.5 + rand() / 2)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delay-seconds or an
    HTTP-date, RFC 9110); None if there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not str.isdigit alone: "²" is a digit, and no number
        return min(float(value), RETRY_AFTER_CAP)  # a huge one would overflow the next attempt's date
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return min(RETRY_AFTER_CAP, max(0.0, (when - now).total_seconds()))
