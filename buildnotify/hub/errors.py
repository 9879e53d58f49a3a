"""The one place where any failure of a PB call becomes an error a client
may be told (those of :mod:`buildnotify.protocol`).

PB sends a ``pb.Error`` as its class name and message and nothing else; any
other exception it sends with its message (which may quote SQL, a path or a
value) after logging a traceback. :func:`for_client` turns every failure of
a call into a ``pb.Error`` with a message meant for people, and logs one line.
"""

from __future__ import annotations

import logging

from sqlalchemy import exc as sql_errors
from twisted.python.failure import Failure
from twisted.spread import pb

from buildnotify.logtext import printable
from buildnotify.protocol import HubFailed, Unavailable

log = logging.getLogger("buildnotify.pb")


def for_client(failure: Failure, call: str) -> Failure:
    """``failure`` as the client may see it: our own ``pb.Error`` as it is,
    anything else replaced (and logged on one line)."""
    if failure.check(pb.Error):
        return failure
    if failure.check(sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.DisconnectionError):
        log.warning("%s: the database is unavailable: %s", call, printable(failure.value, 300))
        return Failure(Unavailable("the hub's database is unavailable; try again later"))
    log.error("%s failed: %s: %s", call, failure.type.__name__, printable(failure.value, 300))
    return Failure(HubFailed(f"the hub failed to answer {call}; the reason is in its log"))
