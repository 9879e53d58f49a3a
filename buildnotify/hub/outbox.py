"""One bounded queue per client connection.

The outbox is the connection's push producer: while the kernel and the
transport keep up, messages go straight to the transport; when the
transport says it is full (``pauseProducing``), messages wait here; past
``limit`` waiting messages the client is too slow and ``on_overflow`` runs
(the service says goodbye and drops it). Memory per client is therefore
bounded by ``limit`` messages plus the transport's own buffer, and a slow
client never delays the others: nothing here ever waits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.spread import pb
from zope.interface import implementer


@implementer(IPushProducer)
class Outbox:
    def __init__(self, broker: pb.Broker, limit: int, on_overflow: Callable[[Outbox], None]) -> None:
        self.broker = broker
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
        return not self._paused and not self._waiting

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
        self.broker.transport.write(message)

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
