"""The hub's side of the PB wire: one-way calls to a client's mind encoded
once and written to many connections. (Which jelly types cross the wire is
:mod:`buildnotify.protocol`'s, shared with clients.)

A one-way PB call (``callRemote(..., pbanswer=0)``) is the banana encoding
of ``["message", requestID, objectID, method, 0, args, kwargs]``. Only
``objectID`` differs between observers, so the jellied and encoded
``args`` of an event are computed once per event and spliced into each
observer's message: fan-out costs a memcpy per observer, not a jelly.
"""

from __future__ import annotations

from typing import Any

from twisted.spread import banana, jelly

from buildnotify.protocol import SECURITY

#: banana's own encoder spells every string out (the "none" dialect): a
#: receiver speaking PB's abbreviated dialect reads that too, so the same
#: bytes suit every connection
encode = banana.encode
_LIST_OF_7 = encode([0] * 7)[:2]  # banana's header for a 7-element list
_EMPTY_KWARGS = encode(jelly.jelly({}, SECURITY))
_MESSAGE_REQUEST_0 = encode(b"message") + encode(0)


class OneWayCall:
    """``method(*args)`` on some client object, with ``args`` jellied and
    encoded once; :meth:`for_object` gives the bytes for one recipient."""

    __slots__ = ("_tail",)

    def __init__(self, method: str, *args: Any) -> None:
        encoded_args = encode(jelly.jelly(args, SECURITY))
        self._tail = encode(method.encode()) + encode(0) + encoded_args + _EMPTY_KWARGS

    def for_object(self, object_id: int) -> bytes:
        return call_head(object_id) + self._tail

    def for_head(self, head: bytes) -> bytes:
        """The call for the recipient whose :func:`call_head` is ``head``."""
        return head + self._tail


def call_head(object_id: int) -> bytes:
    """The bytes before a call's method name for one recipient: the same
    for every call to it, so a session computes them once."""
    return _LIST_OF_7 + _MESSAGE_REQUEST_0 + encode(object_id)


def approx_size(value: Any) -> int:
    """About how many bytes ``value`` (plain data) takes once jellied and
    encoded: enough to cut pages by size without encoding them."""
    if isinstance(value, str | bytes):
        return len(value) + 4
    if isinstance(value, dict):
        return 8 + sum(approx_size(k) + approx_size(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 4 + sum(approx_size(v) for v in value)
    return 9


def refusal(error: jelly.InsecureJelly) -> str:
    """What to tell a client whose arguments held a type we do not unjelly."""
    what = error.args[0] if error.args else "?"
    if isinstance(what, bytes):
        what = what.decode("utf-8", "replace")
    return f"only plain data is accepted; refused to unjelly {what}"
