"""One bounded queue per client connection.

The outbox is the connection's push producer: while the kernel and the
transport keep up, messages go straight to the transport; when the
transport says it is full (``pauseProducing``), messages wait here; past
``limit`` waiting messages the client is too slow and ``on_overflow`` runs
(the service says goodbye and drops it). Memory per client is therefore
bounded by ``limit`` messages plus the transport's own buffer, and a slow
client never delays the others: nothing here ever waits.

Messages sent in one reactor turn (all the events of a group commit, to
every observer) are batched per connection and written together when the
turn ends (:class:`Flusher`): one ``send()`` per connection per turn. When
Twisted holds nothing for a plain TCP connection, the batch goes straight to
the socket, which saves the reactor's writer registration (two
``epoll_ctl`` calls) and its ``doWrite`` per connection per turn; whatever
the kernel does not take is left to the transport as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.spread import pb
from zope.interface import implementer


class Flusher:
    """Outboxes that batched messages this reactor turn, flushed at its end."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._dirty: list[Outbox] = []
        self._call: Any = None

    def add(self, outbox: Outbox) -> None:
        self._dirty.append(outbox)
        if self._call is None:
            self._call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()  # flushed early (the service is stopping)
        self._call = None
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            outbox.flush()


@implementer(IPushProducer)
class Outbox:
    def __init__(
        self,
        broker: pb.Broker,
        limit: int,
        on_overflow: Callable[[Outbox], None],
        flusher: Flusher | None = None,
    ) -> None:
        self.broker = broker
        self._flusher = flusher
        self._batch: list[bytes] = []
        self.limit = limit
        self._on_overflow = on_overflow
        self._waiting: deque[bytes] = deque()
        self._paused = False
        self._drained: list[Deferred[None]] = []
        self.closed = False
        self.overflowed = False
        self.peak = 0  # the most messages ever waiting at once (for tests and metrics)
        broker.transport.registerProducer(self, True)

    @property
    def queued(self) -> int:
        """Messages waiting for the transport (not counting its own buffer)."""
        return len(self._waiting)

    @property
    def writable(self) -> bool:
        return not self._paused and not self._waiting and not self._batch

    def send(self, message: bytes) -> None:
        """Write an encoded PB message now, or queue it; never blocks."""
        if self.closed:
            return
        if self._paused or self._waiting:
            self._waiting.append(message)
            self.peak = max(self.peak, len(self._waiting))
            if len(self._waiting) > self.limit:
                self.overflowed = True
                self._on_overflow(self)
            return
        if self._flusher is None:
            self.broker.transport.write(message)
            return
        if not self._batch:
            self._flusher.add(self)
        self._batch.append(message)

    def flush(self) -> None:
        """Write this turn's batch: straight to the socket if nothing is
        ahead of it, else behind what the transport holds."""
        batch, self._batch = self._batch, []
        transport = self.broker.transport
        if self.closed or not batch or transport is None:
            return
        data = b"".join(batch)
        if self._paused or self._waiting:  # paused since: keep the order
            self._waiting.append(data)
            return
        if (
            isinstance(transport, tcp.Connection)
            and not transport.TLS
            and transport.connected
            and not transport.disconnecting
            and not transport.dataBuffer
            and not transport._tempDataBuffer
        ):
            try:
                sent = transport.socket.send(data)
            except OSError:  # EAGAIN, or an error the transport will meet and report
                sent = 0
            data = data[sent:]
        if data:
            transport.write(data)
        if self.writable and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drained(self) -> Deferred[None]:
        """Fires when the queue is empty and the transport takes more: the
        pace for a catch-up that must not flood a slow client."""
        d: Deferred[None] = Deferred()
        if self.writable or self.closed:
            d.callback(None)
        else:
            self._drained.append(d)
        return d

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._waiting.clear()
        self._batch.clear()
        transport = self.broker.transport
        if transport is not None and getattr(transport, "producer", None) is self:
            transport.unregisterProducer()
        waiting, self._drained = self._drained, []
        for d in waiting:
            d.callback(None)

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._waiting and not self._paused and not self.closed:
            self.broker.transport.write(self._waiting.popleft())
        if self.writable:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def stopProducing(self) -> None:
        self.close()
