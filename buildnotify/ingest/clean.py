"""The door between the parsers and the store: every :class:`Delivery` a
parser hands on passes :func:`clean` before it is recorded.

The store then sees only values it can hold, and the same values on SQLite
and PostgreSQL: SQLite would keep a NUL, a lone surrogate or a 10,000
character branch that PostgreSQL refuses (and the hub would answer 503, so
the CI would retry forever). The limits are the column sizes of
``store/schema.py``; docs/events.md lists them per field.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status
from buildnotify.ingest.base import BadRequest, WrongType, content_hash, in_range

#: project, pipeline, branch and the author's name, email and login are cut to this.
NAME_LIMIT = 255
#: A longer build id is replaced by its SHA-256: cut, two runs could become one.
BUILD_ID_LIMIT = 255
#: A longer sha is not a commit id and is dropped. (URLs are TEXT: no limit.)
SHA_LIMIT = 64
#: Attempts are clamped to 1 .. ATTEMPT_MAX (the column is a 32-bit INTEGER).
ATTEMPT_MAX = 2**31 - 1

_SPACES = re.compile(r"[\t\n\r\u2028\u2029]+")  # line breaks and tabs become one space
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # other control characters, NUL first of all, go
_SURROGATES = re.compile(r"[\ud800-\udfff]")  # lone halves of a pair (JSON "\ud800"): not text


def normalized(value: str) -> str:
    """``value`` without control characters (line breaks and tabs become a
    space), lone surrogates replaced by U+FFFD, and white space trimmed."""
    if value.isprintable():  # nearly every value: none of the characters below is printable
        return value.strip()
    return _SURROGATES.sub("\ufffd", _CONTROLS.sub("", _SPACES.sub(" ", value))).strip()


def clean(delivery: Delivery) -> Delivery:
    """``delivery`` with every value normalized to what the store holds, or
    :class:`BadRequest` naming the hub field that cannot be (a parser handed
    on a wrong type, or nothing is left of a required name)."""
    key = _delivery_key(delivery.key)
    return dataclasses.replace(delivery, key=key, events=tuple(_event(e, key) for e in delivery.events))


def _event(event: BuildEvent, key: str) -> BuildEvent:
    if not isinstance(event.author, Author):
        raise WrongType("author", "an object")
    if not isinstance(event.status, Status):
        raise WrongType("status", "a status")
    return event.replace(
        project=_required(event.project, "project"),
        pipeline=_required(event.pipeline, "pipeline"),
        build_id=_build_id(event.build_id),
        branch=_name(event.branch, "branch"),
        sha=_sha(event.sha),
        author=Author(
            name=_name(event.author.name, "author.name"),
            email=_name(event.author.email, "author.email"),
            login=_name(event.author.login, "author.login"),
        ),
        url=_text(event.url, "url"),
        build_number=_build_number(event.build_number),
        attempt=_attempt(event.attempt),
        started_at=_time(event.started_at, "started_at"),
        finished_at=_time(event.finished_at, "finished_at"),
        received_at=_time(event.received_at, "received_at"),
        delivery_key=key,
    )


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise WrongType(name, "a string")
    return normalized(value) or None


def _name(value: object, name: str) -> str | None:
    cleaned = _text(value, name)
    return cleaned[:NAME_LIMIT].rstrip() if cleaned else None


def _required(value: object, name: str) -> str:
    cleaned = _name(value, name)
    if cleaned is None:
        raise BadRequest(f"missing field: {name} (nothing is left once control characters are removed)")
    return cleaned


def _sha(value: object) -> str | None:
    cleaned = _text(value, "sha")
    return cleaned if cleaned and len(cleaned) <= SHA_LIMIT else None


def _build_id(value: object) -> str:
    cleaned = _text(value, "build_id")
    if cleaned is None:
        raise BadRequest("missing field: build_id (nothing is left once control characters are removed)")
    return cleaned if len(cleaned) <= BUILD_ID_LIMIT else _digest(cleaned)


def _delivery_key(key: str) -> str:
    """The key as sent when it is printable, else its SHA-256: a redelivery of
    the same key still finds it, and two odd keys stay apart."""
    return key if normalized(key) == key and key else _digest(key)


def _digest(value: str) -> str:
    return content_hash(value.encode("utf-8", "surrogatepass"))


def _build_number(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("build_number", "an integer")
    return in_range(value, "build_number")


def _attempt(value: object) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise WrongType("attempt", "an integer")
    return min(max(value, 1), ATTEMPT_MAX)


def _time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise WrongType(name, "a time")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
