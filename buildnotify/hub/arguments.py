"""Checks for what a PB client sends, at the door: every remote method runs
its arguments through these before anything else sees them, so the store
only ever gets clean values (the same on SQLite and PostgreSQL) and a
mistake comes back as :class:`BadArgument` naming the argument.

The limits are documented in docs/protocol.md ("Arguments").
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.spread import jelly, pb

from buildnotify.hub.wire import refusal
from buildnotify.protocol import BadArgument
from buildnotify.store.schema import BIGINT_MAX, NAME_LENGTH

#: names of projects, pipelines and branches: the store's column width
MAX_NAME = NAME_LENGTH
#: a claim's note
MAX_NOTE = 500
#: a developer's token (ours are 43 characters; room for others)
MAX_TOKEN = 1024
#: projects named in one call
MAX_PROJECTS = 200
#: alert ids acknowledged in one call
MAX_IDS = 1000
#: the largest id or count the store holds
MAX_INT = BIGINT_MAX
#: mute for at most a year (None: until unmuted)
MAX_MUTE_MINUTES = 365 * 24 * 60

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # what a note may not hold (newline and tab may)
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def call(
    broker: pb.Broker, method: Callable[..., Any], name: str, args: Any, kw: Any, perspective: Any = None
) -> Any:
    """Run a remote call: its arguments unjellied and fitted to ``method``
    (:func:`_unpack`), an ``async def`` method's coroutine made a Deferred,
    and the result serialized for the peer."""
    args, kw = _unpack(broker, method, name, args, kw, perspective)
    result = method(*args, **kw)
    if inspect.iscoroutine(result):
        result = Deferred.fromCoroutine(result)
    return broker.serialize(result, perspective, method, args, kw)


def _unpack(
    broker: pb.Broker, method: Callable[..., Any], name: str, args: Any, kw: Any, perspective: Any = None
) -> tuple[list[Any], dict[str, Any]]:
    """A call's arguments unjellied (plain data only) and fitted to
    ``method``'s parameters, or :class:`BadArgument` saying what is wrong."""
    try:
        args = broker.unserialize(args, perspective)
        kw = broker.unserialize(kw, perspective)
    except jelly.InsecureJelly as e:
        raise BadArgument(refusal(e)) from None
    except UnicodeDecodeError:
        raise BadArgument(f"{name}: every string must be valid UTF-8") from None
    if isinstance(kw, dict):
        kw = {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in kw.items()}
    _check_call(method, name, args, kw)
    return list(args), kw


def _check_call(method: Callable[..., Any], name: str, args: Any, kw: Any) -> None:
    """Refuse a call whose arguments do not fit ``method``'s parameters
    (too many, a missing one, an unknown keyword) with a message for people."""
    if not isinstance(args, list | tuple) or not isinstance(kw, dict):
        raise BadArgument(f"{name}: malformed call")
    try:
        _signature(getattr(method, "__func__", method)).bind(None, *args, **kw)
    except TypeError as e:
        raise BadArgument(f"{name}: {e}") from None


@functools.cache
def _signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)


def text(value: Any, name: str, *, limit: int = MAX_NAME, note: bool = False) -> str:
    """A non-empty string of at most ``limit`` characters, without control
    characters (a ``note`` may hold newlines and tabs) or lone surrogates."""
    if not isinstance(value, str):
        raise BadArgument(f"{name} must be a string, not {_kind(value)}")
    if not value:
        raise BadArgument(f"{name} must not be empty")
    if len(value) > limit:
        raise BadArgument(f"{name} is {len(value)} characters long; at most {limit} are allowed")
    if (_CONTROL if note else _NAME_CONTROL).search(value):
        raise BadArgument(f"{name} must not contain control characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadArgument(f"{name} must be valid Unicode (it holds a lone surrogate)") from None
    return value


def optional_text(value: Any, name: str, **kw: Any) -> str | None:
    return None if value is None else text(value, name, **kw)


def integer(value: Any, name: str, *, low: int = 0, high: int = MAX_INT) -> int:
    """An int (not a bool, not a float) between ``low`` and ``high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArgument(f"{name} must be a whole number, not {_kind(value)}")
    if not low <= value <= high:
        raise BadArgument(f"{name} must be between {low} and {high}, not {value}")
    return value


def optional_integer(value: Any, name: str, **kw: Any) -> int | None:
    return None if value is None else integer(value, name, **kw)


def number(value: Any, name: str, *, low: float, high: float) -> float:
    """A finite int or float, ``low < value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadArgument(f"{name} must be a number, not {_kind(value)}")
    if not (math.isfinite(value) and low < value <= high):
        raise BadArgument(f"{name} must be more than {low:g} and at most {high:g}, not {value}")
    return float(value)


def project_list(value: Any, name: str = "projects") -> list[str]:
    """A list of project names (duplicates dropped, order kept)."""
    if not isinstance(value, list | tuple):
        raise BadArgument(f"{name} must be a list of project names, not {_kind(value)}")
    if len(value) > MAX_PROJECTS:
        raise BadArgument(f"{name} names {len(value)} projects; at most {MAX_PROJECTS} at a time")
    return list(dict.fromkeys(text(p, f"each of {name}") for p in value))


def id_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list | tuple):
        raise BadArgument(f"{name} must be a list of ids, not {_kind(value)}")
    if len(value) > MAX_IDS:
        raise BadArgument(f"{name} holds {len(value)} ids; at most {MAX_IDS} at a time")
    return [integer(i, f"each of {name}", low=1) for i in value]


def _kind(value: Any) -> str:
    """What the client sent, in words (never its value: it may be huge)."""
    names = {
        type(None): "None",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        bytes: "bytes",
        list: "a list",
        tuple: "a list",
        dict: "a dictionary",
    }
    return names.get(type(value), "some other type")
