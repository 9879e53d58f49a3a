"""One PB connection to the hub, with every per-connection resource bounded.

PB's broker writes answers and errors straight to its transport, reads an
expression of any size, and lets a peer keep any number of calls waiting.
:class:`HubConnection` sits between the socket and the broker as the
broker's transport (Twisted's ``ProtocolWrapper``), so that:

- everything written to the client, answers as well as pushes, goes through
  one bounded, ordered :class:`~buildnotify.hub.outbox.Outbox`;
- the expression being received is bounded in bytes (small before login);
- at most ``calls_in_flight`` calls wait for their answers (more are refused
  with :class:`TooBusy`);
- a connection with no session is closed after ``login_timeout`` seconds;
- at most ``connections_per_address`` connections come from one address.

Behind a balancer that speaks the PROXY protocol (a ``haproxy:`` endpoint)
the client's own address is known only once the header is read, which is
before the first bytes reach the broker: such a connection is counted
against its client then, and until then it is bounded like any other
connection that has not logged in (message size, login timeout).

It knows nothing of sessions beyond counting them: the service decides what
a session is and when one ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.spread import pb

from buildnotify.hub.errors import for_client
from buildnotify.hub.outbox import Flusher, Outbox
from buildnotify.hub.settings import PBSettings
from buildnotify.protocol import SECURITY, TooBusy


class ConnectionHost(Protocol):
    """What a connection needs of the service that accepts it (hub/service.py)."""

    settings: PBSettings
    clock: Any
    flusher: Flusher

    def admit(self, peer: str) -> bool: ...

    def release(self, peer: str) -> None: ...

    def connected(self, connection: HubConnection) -> None: ...

    def disconnected(self, connection: HubConnection) -> None: ...

    def too_slow(self, connection: HubConnection) -> None: ...

    def later(self, delay: float, f: Any, *args: Any) -> Any: ...


log = logging.getLogger("buildnotify.pb")

#: the largest expression a client may send before it has logged in (a login
#: call with a name, a token and a mind is a few hundred bytes)
MESSAGE_BEFORE_LOGIN = 16 * 1024
#: what a list being received costs beyond its items (Python's list overhead)
_LIST_COST = 64


class HubBroker(pb.Broker):
    """PB's broker, measuring the expression it is receiving.

    Banana holds a partial expression as ``buffer`` (bytes of an item not yet
    complete) and ``listStack`` (lists still being filled); what their items
    hold is counted as they arrive, so :meth:`pending_bytes` is a bound on the
    memory a half-sent message holds, whatever its shape."""

    connection: HubConnection
    _held = 0

    def gotItem(self, item: Any) -> None:  # noqa: N802 - Banana's name
        if self.listStack:  # a part of an expression still being received
            self._held += len(item) if isinstance(item, bytes) else 16
        super().gotItem(item)
        if not self.listStack:
            self._held = 0

    def pending_bytes(self) -> int:
        return len(self.buffer) + self._held + _LIST_COST * len(self.listStack)


class HubServerFactory(pb.PBServerFactory):
    protocol = HubBroker


class HubConnection(ProtocolWrapper):
    """The broker's transport: writes go to the outbox, reads are bounded."""

    factory: ConnectionGuard
    wrappedProtocol: HubBroker

    def __init__(self, factory: ConnectionGuard, broker: HubBroker, peer: str, counted: bool) -> None:
        super().__init__(factory, broker)
        broker.connection = self
        self.service = factory.service
        self.peer = peer  # the client's address (the balancer's until a PROXY header is read)
        self.counted = counted  # admitted against connections_per_address as ``peer``
        self.sessions: set[Any] = set()  # every session logged in over this connection
        self.in_flight = 0  # calls received and not yet answered
        self.pinging = False  # a heartbeat ping is out
        self.closing = False  # saying its last words: what it sends is ignored
        self.outbox: Outbox | None = None
        self._login_timer: Any = None

    @property
    def broker(self) -> HubBroker:
        return self.wrappedProtocol

    @property
    def max_message(self) -> int:
        return self.service.settings.max_message if self.sessions else MESSAGE_BEFORE_LOGIN

    def makeConnection(self, transport: Any) -> None:  # noqa: N802 - Twisted's name
        settings = self.service.settings
        self.outbox = Outbox(
            transport, settings.queue_limit, settings.queue_bytes, self._overflowed, self.service.flusher
        )
        self._expect_login()
        self.service.connected(self)
        super().makeConnection(transport)

    # -- the broker's transport ---------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.outbox is not None:
            self.outbox.send(data)

    def writeSequence(self, data: list[bytes]) -> None:  # noqa: N802 - Twisted's name
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802 - Twisted's name
        if self.outbox is not None and not self.outbox.closed:
            self.outbox.flush()  # what PB wrote this turn goes out before the close
        super().loseConnection()

    def close_after(self, last: list[bytes]) -> None:
        """Drop what waits in the outbox, write ``last`` behind what the
        transport holds, and close our side once that is sent (abort after the
        grace period if it never is). Reading goes on (and is ignored): closing
        a socket with unread data sends a reset, which would destroy the last
        words in the client's buffer."""
        self.closing = True
        if self.outbox is not None:
            self.outbox.close()
        for data in last:
            self.transport.write(data)
        self._half_close()
        self._abort_after_grace()

    def finish(self) -> None:
        """Close our side once what the outbox holds is written (reading
        goes on and is ignored, as in :meth:`close_after`); abort after the
        grace period if the client never reads it."""
        self.closing = True
        if self.outbox is None:
            return
        self.outbox.flush()  # what was sent this turn (a goodbye) goes out now, or queues
        self.outbox.drained().addCallback(lambda _: self._half_close())
        self._abort_after_grace()

    def _half_close(self) -> None:
        (getattr(self.transport, "loseWriteConnection", None) or self.transport.loseConnection)()

    def _abort_after_grace(self) -> None:
        """A client that never reads its last words is cut off after ``grace``."""
        self.service.later(self.service.settings.grace, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if getattr(self.transport, "connected", False):
            self.abort()

    def abort(self) -> None:
        """Close now, whatever is queued."""
        if self.outbox is not None:
            self.outbox.close()
        (getattr(self.transport, "abortConnection", None) or self.transport.loseConnection)()

    # -- what the client sends ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.closing or (not self.counted and not self._admit_proxied()):
            return
        try:
            self.broker.dataReceived(data)
        except Exception as e:  # PB contains errors of the methods it calls: this is the peer's
            self._refuse(f"not a PB message ({type(e).__name__})")
            return
        if self.broker.pending_bytes() > self.max_message:
            self._refuse(f"a message over {self.max_message} bytes")

    def _admit_proxied(self) -> bool:
        """Count this connection against its client's address, which the
        PROXY header (read by the transport before these first bytes) made the
        transport's peer; close it if that address has too many."""
        self.peer = address_of(self.transport.getPeer())
        self.counted = self.service.admit(self.peer)
        if not self.counted:
            self.abort()
        return self.counted

    def _refuse(self, why: str) -> None:
        log.info("closing the PB connection from %s: %s", self.peer, why)
        self.abort()

    def answer(self, name: str, call: Callable[[], Any]) -> Any:
        """Run the incoming call ``name``, counted as in flight until its
        answer is handed to PB; refused with :class:`TooBusy` past the limit.
        Whatever it fails with reaches the client as a ``pb.Error`` meant for
        people (:func:`~buildnotify.hub.errors.for_client`)."""
        limit = self.service.settings.calls_in_flight
        if self.in_flight >= limit:
            raise TooBusy(
                f"too many calls waiting for answers on this connection (at most {limit}); "
                "wait for an answer before sending more"
            )
        self.in_flight += 1
        try:
            result = call()
        except pb.Error:
            self.in_flight -= 1
            raise
        except Exception:
            self.in_flight -= 1
            raise for_client(Failure(), name).value from None
        if isinstance(result, Deferred):
            return result.addErrback(for_client, name).addBoth(self._answered)
        self.in_flight -= 1
        return result

    def _answered(self, result: Any) -> Any:
        self.in_flight -= 1
        return result

    # -- sessions -------------------------------------------------------------------------

    def session_started(self, session: Any) -> None:
        self.sessions.add(session)
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()

    def session_ended(self, session: Any) -> None:
        self.sessions.discard(session)
        if not self.sessions and self.is_open:
            self._expect_login()  # a connection nobody uses must log in again or go

    @property
    def is_open(self) -> bool:
        return (
            self.outbox is not None and not self.outbox.closed and not self.disconnecting and not self.closing
        )

    def _expect_login(self) -> None:
        timeout = self.service.settings.login_timeout
        if self._login_timer is None or not self._login_timer.active():
            self._login_timer = self.service.clock.callLater(timeout, self._login_timed_out)

    def _login_timed_out(self) -> None:
        if not self.sessions:
            self._refuse(f"no login within {self.service.settings.login_timeout:g} s")

    def _overflowed(self, outbox: Outbox) -> None:
        self.service.too_slow(self)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        if self._login_timer is not None and self._login_timer.active():
            self._login_timer.cancel()
        if self.outbox is not None:
            self.outbox.close()
        self.service.disconnected(self)
        super().connectionLost(reason)


class ConnectionGuard(WrappingFactory):
    """Wraps the PB server factory: one :class:`HubConnection` per connection,
    at most ``connections_per_address`` from one address."""

    protocol = HubConnection

    def __init__(self, service: ConnectionHost, root: Any, proxied: bool = False) -> None:
        super().__init__(HubServerFactory(root, security=SECURITY))
        self.service = service
        self.proxied = proxied  # ``addr`` is a balancer's; the client's comes in a PROXY header

    def buildProtocol(self, addr: Any) -> HubConnection | None:  # noqa: N802 - Twisted's name
        peer = address_of(addr)
        if not self.proxied and not self.service.admit(peer):
            return None
        broker = self.wrappedFactory.buildProtocol(addr)
        return HubConnection(self, broker, peer, counted=not self.proxied)

    def unregisterProtocol(self, p: HubConnection) -> None:  # noqa: N802 - Twisted's name
        super().unregisterProtocol(p)
        if p.counted:
            self.service.release(p.peer)


def address_of(addr: Any) -> str:
    """The host part of a peer address: what limits and log lines count by."""
    return str(getattr(addr, "host", None) or addr)
