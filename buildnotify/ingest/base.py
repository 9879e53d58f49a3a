"""The contract every CI dialect follows: a :class:`HookRequest` in, a
:class:`~buildnotify.delivery.Delivery` out, or one of the errors below.

A provider module is a pure function of the request and its configuration:
no I/O, no database, no network. The HTTP resource turns the errors into JSON
responses; anything a provider raises that is not a :class:`HookError` is a
bug in the provider and is answered 400, never 5xx.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from buildnotify.delivery import Delivery


class HookError(Exception):
    """A request we answer with ``code`` and ``{"error": message}``."""

    code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HookError):
    code = 400


class Unauthorized(HookError):
    code = 401


class UnsupportedMediaType(HookError):
    code = 415


class WrongType(BadRequest):
    """A field that is there but of a type the hub cannot use."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(f"field {name} has the wrong type: expected {expected}")
        self.field = name


class OutOfRange(BadRequest):
    """A number the store cannot hold; refused rather than wrapped or cut."""

    def __init__(self, name: str, low: int, high: int) -> None:
        super().__init__(f"field {name} is out of range: expected {low} to {high}")
        self.field = name


class Ignored(Exception):
    """A well-formed hook we do not store (unknown event, ping): answered 202
    with ``{"ignored": reason}`` because some CI systems disable a hook that
    keeps getting 4xx."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class HookRequest:
    """What a provider sees of an HTTP request.

    ``headers`` keys are lower-case. ``path`` is what follows
    ``/hooks/<provider>/`` (Jenkins puts its token there), ``query`` holds the
    decoded query arguments (first value of each).
    """

    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)
    path: str = ""
    received_at: datetime = dataclasses.field(default_factory=lambda: datetime.now(timezone.utc))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        raw = self.headers.get("content-type", "")
        return raw.split(";", 1)[0].strip().lower()


@dataclasses.dataclass(frozen=True)
class ProviderConfig:
    """Secrets for one provider. ``secret`` is the shared HMAC secret or token;
    ``tokens`` maps a source name (for logs) to its token, for providers that
    authenticate per source (jenkins, generic). Empty means unauthenticated."""

    secret: str | None = dataclasses.field(default=None, repr=False)  # secrets stay out of reprs
    tokens: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    replay_window: float = 300.0  # seconds, for timestamped signatures

    @property
    def authenticated(self) -> bool:
        return bool(self.secret or self.tokens)


class Provider(Protocol):
    name: str

    def __call__(self, request: HookRequest, config: ProviderConfig) -> Delivery: ...


# -- helpers shared by the dialects -------------------------------------------------


def hmac_sha256_hex(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def constant_time_equal(a: str | bytes | None, b: str | bytes | None) -> bool:
    if a is None or b is None:
        return False
    a = a.encode() if isinstance(a, str) else a
    b = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(a, b)


def match_token(presented: str | None, tokens: Mapping[str, str]) -> str | None:
    """The source name whose token equals ``presented``, compared in constant
    time against every configured token (so timing says nothing of which)."""
    found = None
    for name, token in tokens.items():
        if constant_time_equal(presented, token) and found is None:
            found = name
    return found


def content_hash(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def require_json(request: HookRequest) -> None:
    """415 unless the body claims to be JSON (a missing Content-Type is let
    through: several CI plugins send none)."""
    ctype = request.content_type
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"expected application/json, got {ctype}")


def load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("malformed JSON: expected an object at the top level")
    return data


#: The integers every column holding a CI's number can store (BIGINT).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_DIGITS = re.compile(r"\s*([0-9]+)\s*")


def field(data: Mapping[str, Any], dotted: str, kind: type | tuple[type, ...] = object) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; a missing, empty or mistyped field is
    a 400 that names it (a bool is not a number here, and an integer must fit
    the store)."""
    value = _present(data, dotted, required=True)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        raise WrongType(dotted, _describe(kind))
    if isinstance(value, int) and not isinstance(value, bool):
        return in_range(value, dotted)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _describe(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", Mapping: "an object", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _kinds(kind))


def optional(data: Mapping[str, Any] | None, dotted: str) -> Any:
    """Like :func:`field` but None when absent, and of any type."""
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def text(data: Mapping[str, Any] | None, dotted: str, *, required: bool = False) -> str | None:
    """A string field: None when absent, null or empty (400 if ``required``);
    400 naming the field when it, or an object on its path, has another type."""
    value = _present(data, dotted, required)
    if value is not None and not isinstance(value, str):
        raise WrongType(dotted, "a string")
    return value


def integer(data: Mapping[str, Any] | None, dotted: str, *, required: bool = False) -> int | None:
    """An integer field; a string of decimal digits counts (some CI plugins and
    shell scripts quote numbers). None when absent (400 if ``required``); 400
    naming the field for another type or a number the store cannot hold."""
    value = _present(data, dotted, required)
    if isinstance(value, str) and (digits := _DIGITS.fullmatch(value)):
        value = digits.group(1).lstrip("0") or "0"
        if len(value) > len(str(INT_MAX)):  # int() of thousands of digits is slow, and refused anyway
            raise OutOfRange(dotted, INT_MIN, INT_MAX)
        value = int(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise WrongType(dotted, "an integer")
    return value if value is None else in_range(value, dotted)


def identifier(data: Mapping[str, Any], dotted: str, number: str | None = None) -> str:
    """A string or integer id, as a string; without one, the integer field
    ``number`` (a run's number names it when the payload has no id)."""
    value = _present(data, dotted)
    if value is None and number is not None:
        value = integer(data, number)
    if value is None:
        raise BadRequest(f"missing field: {dotted}" + (f" (or {number})" if number else ""))
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WrongType(dotted, "a string or an integer")
    return str(value)


def in_range(value: int, name: str) -> int:
    """``value`` if the store can hold it (BIGINT), else :class:`OutOfRange` naming ``name``."""
    if not INT_MIN <= value <= INT_MAX:
        raise OutOfRange(name, INT_MIN, INT_MAX)
    return value


def _present(data: Mapping[str, Any] | None, dotted: str, required: bool = False) -> Any:
    """The value at ``dotted``; None if it or an object on the way is absent,
    null or empty (400 if ``required``); 400 naming the first step that is
    there but not an object."""
    value: Any = data
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        if value is None:
            break
        if not isinstance(value, Mapping):
            raise WrongType(".".join(parts[:depth]) or dotted, "an object")
        value = value.get(part)
    if value is None or value == "":
        if required:
            raise BadRequest(f"missing field: {dotted}")
        return None
    return value


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (with ``Z`` or an offset), GitLab's ``2016-08-12 15:23:28 UTC``
    (and ``+0200``), or epoch seconds/milliseconds; always timezone-aware UTC.
    Unparseable values are None rather than an error: a timestamp is never
    worth rejecting a build result for."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not value > 0:
            return None  # Jenkins and others send 0 for "not yet"; NaN is not a time either
        try:
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, ValueError, OSError):  # past the year 9999
            return None
    if not isinstance(value, str):
        return None
    raw = value.strip()
    if raw.endswith(" UTC"):
        raw = raw[:-4] + "+00:00"
    elif raw.endswith("Z"):
        raw = raw[:-1] + "+00:00"
    for candidate in (raw, raw.replace(" ", "T", 1)):
        try:
            parsed = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        for fmt in ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S%z"):
            try:
                parsed = datetime.strptime(raw, fmt)
                break
            except ValueError:
                continue
        else:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01 with a positive offset, 9999-12-31 with a negative one
        return None


def url_path(url: str | None) -> list[str]:
    """The path segments of a URL, ``https://host/acme/widget`` or scp-like
    ``git@host:acme/widget.git``; [] for none or one that does not parse."""
    if not url:
        return []
    if "://" not in url:
        url = "ssh://" + url.replace(":", "/", 1)  # git@host:acme/widget.git
    try:
        path = urlsplit(url).path
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return []
    return [segment for segment in path.split("/") if segment]


def first(values: Iterable[Any]) -> Any:
    """The first value that is not None/empty."""
    for value in values:
        if value not in (None, ""):
            return value
    return None
