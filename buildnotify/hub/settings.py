"""How the PB service treats sessions: the ``[pb]`` table of the hub's
configuration, as the service reads it. :mod:`buildnotify.config` reads the
file into it; the hub depends on these settings, not on the config file.
"""

from __future__ import annotations

import dataclasses

#: what a second login of a developer does (``login_policy``)
POLICIES = ("kick-old", "refuse-new")


@dataclasses.dataclass(frozen=True)
class PBSettings:
    """How the PB service treats sessions (the ``[pb]`` table)."""

    anonymous: bool = True  # anonymous clients may watch public projects
    login_policy: str = "kick-old"  # a second login of a developer: kick-old | refuse-new
    grace: float = 5.0  # seconds a replaced session keeps working after goodbye
    ping_timeout: float = 5.0  # seconds a client has to answer a ping
    heartbeat: float = 30.0  # seconds between pings of every attached client
    queue_limit: int = 1000  # messages waiting for a slow client before it is dropped ...
    queue_bytes: int = 4 * 1024 * 1024  # ... or bytes waiting for it
    calls_in_flight: int = 16  # calls of one connection waiting for answers; more are refused
    max_message: int = 256 * 1024  # bytes of one message a logged-in client may send
    login_timeout: float = 10.0  # seconds a connection has to log in (again, once its sessions end)
    idle_timeout: float = 300.0  # seconds a session without a mind may stay silent
    connections_per_address: int = 32  # PB connections from one address at once
    access_poll: float = 1.0  # seconds between looks for access changes made by the account commands
    retention_days: int = 30  # how far back a reconnecting client can catch up (reported)
    login_failures: int = 5  # failed logins per peer address ...
    login_window: float = 60.0  # ... per this many seconds
