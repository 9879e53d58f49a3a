"""What the hub and its PB clients share: which jelly types cross the wire,
and the errors a client is told (docs/protocol.md).

PB sends a ``pb.Error`` as its qualified class name (``remoteType``) and its
message, so these classes' names are part of the wire protocol: clients
recognise them with :func:`raised_remotely`, never by spelling the name out.
Both sides import this module; it imports nothing else of buildnotify.
"""

from __future__ import annotations

from twisted.python import reflect
from twisted.spread import jelly, pb


class StrictSecurity(jelly.SecurityOptions):
    """Plain data, PB references, and the project's own registered types,
    nothing else. (Twisted's default lets any registered class of any module
    through, since it allows every dotted type name.)"""

    #: types PB itself needs: references to the client's mind and back to our
    #: objects, and failures raised in the client's remote methods.
    PB_TYPES = ("remote", "local", "twisted.spread.pb.CopyableFailure")
    #: what the jellier asks about when we *send* plain data (no module is
    #: ever imported for these on the receiving side)
    OUTGOING = tuple(
        f"builtins.{t.__name__}"
        for t in (dict, list, tuple, str, bytes, int, float, bool, type(None), set, frozenset)
    )

    def __init__(self, *own_types: str) -> None:
        super().__init__()
        self.allowBasicTypes()
        self.allowTypes(*self.PB_TYPES, *self.OUTGOING, *own_types)

    def isTypeAllowed(self, typeName: bytes | str) -> bool:  # noqa: N802 - Twisted's name
        if not isinstance(typeName, bytes):
            typeName = typeName.encode("utf-8")
        return typeName in self.allowedTypes


SECURITY = StrictSecurity()


class LoginFailed(pb.Error):
    """A login that did not succeed; the message says why, never the token."""


class NotAllowed(pb.Error):
    """The session may not do this (anonymous, private project, no mind)."""


class BadArgument(pb.Error):
    """An argument of the wrong type, length or range; the message names it."""


class SessionEnded(pb.Error):
    """The session was replaced or dropped; its reference no longer works."""


class TooBusy(pb.Error):
    """More calls are waiting for answers than one connection may have."""


class Unavailable(pb.Error):
    """The hub cannot answer now (its database is unreachable); retry later."""


class HubFailed(pb.Error):
    """The hub failed to do this; the reason is in its log, not in the message."""


def raised_remotely(error: BaseException, *kinds: type[pb.Error]) -> bool:
    """Whether ``error`` is the hub raising one of ``kinds`` (a
    ``pb.RemoteError`` whose ``remoteType`` names the class)."""
    if not isinstance(error, pb.RemoteError):
        return False
    remote = error.remoteType
    name = remote.decode() if isinstance(remote, bytes) else str(remote)
    return name in {reflect.qual(kind) for kind in kinds}
