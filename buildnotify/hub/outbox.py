"""One bounded queue per client connection, for everything the hub writes
to it: pushed events, claims and goodbyes, and PB's own answers and errors.

The outbox is the connection's push producer: while the kernel and the
transport keep up, messages go straight to the transport; when the
transport says it is full (``pauseProducing``), messages wait here; past
``limit`` waiting messages or ``max_bytes`` waiting bytes the client is too
slow and ``on_overflow`` runs (the service says goodbye and drops it).
Memory per client is therefore bounded by those limits plus the transport's
own buffer (Twisted pauses its producer at 64 KiB), and a slow client never
delays the others: nothing here ever waits.

Messages sent in one reactor turn (all the events of a group commit, to
every observer) are batched per connection and written together when the
turn ends (:class:`Flusher`): one ``send()`` per connection per turn. When
Twisted holds nothing for a plain TCP connection, the batch goes straight to
the socket, which saves the reactor's writer registration (two
``epoll_ctl`` calls) and its ``doWrite`` per connection per turn; whatever
the kernel does not take is left to the transport as before. That path reads
attributes private to Twisted's ``tcp.Connection``; :func:`direct_send_works`
says whether they are there, and without them every batch takes
``transport.write``.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

log = logging.getLogger(__name__)

#: the private attributes of ``tcp.Connection`` the direct send needs
_DIRECT_SEND_ATTRIBUTES = ("socket", "dataBuffer", "_tempDataBuffer", "connected", "disconnecting", "TLS")
#: benchmarks turn the direct send off to measure what it saves (bench/fanout.py)
_DIRECT_SEND_ENABLED = os.environ.get("BUILDNOTIFY_DIRECT_SEND", "1") != "0"


def direct_send_works(transport: Any) -> bool:
    """Whether batches for ``transport`` may go straight to its socket: a
    plain TCP connection of a Twisted that still has the attributes we read."""
    return (
        _DIRECT_SEND_ENABLED
        and isinstance(transport, tcp.Connection)
        and all(hasattr(transport, name) for name in _DIRECT_SEND_ATTRIBUTES)
    )


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
        """Flush every dirty outbox; one that fails is logged and closed, and
        never keeps the others from their messages."""
        if self._call is not None and self._call.active():
            self._call.cancel()  # flushed early (the service is stopping)
        self._call = None
        dirty, self._dirty = self._dirty, []
        for outbox in dirty:
            try:
                outbox.flush()
            except Exception:
                log.exception("writing to a client connection failed; closing it")
                outbox.fail()


@implementer(IPushProducer)
class Outbox:
    def __init__(
        self,
        transport: Any,
        limit: int,
        max_bytes: int,
        on_overflow: Callable[[Outbox], None],
        flusher: Flusher | None = None,
    ) -> None:
        self.transport = transport
        self._flusher = flusher
        self._batch: list[bytes] = []
        self.limit = limit
        self.max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._waiting: deque[tuple[bytes, int]] = deque()  # (data, messages in it)
        self._waiting_messages = 0
        self._waiting_bytes = 0
        self._paused = False
        self._drained: list[Deferred[None]] = []
        self._direct = direct_send_works(transport) and not transport.TLS
        self.closed = False
        self.overflowed = False
        self.peak = 0  # the most messages ever waiting at once (for tests and metrics)
        self.peak_bytes = 0
        transport.registerProducer(self, True)

    @property
    def writable(self) -> bool:
        return not self._paused and not self._waiting and not self._batch

    def send(self, message: bytes) -> None:
        """Write an encoded PB message now, or queue it; never blocks."""
        if self.closed:
            return
        if self._paused or self._waiting:
            self._wait(message, 1)
            return
        if self._flusher is None:
            self.transport.write(message)
            return
        if not self._batch:
            self._flusher.add(self)
        self._batch.append(message)

    def _wait(self, data: bytes, messages: int) -> None:
        self._waiting.append((data, messages))
        self._waiting_messages += messages
        self._waiting_bytes += len(data)
        self.peak = max(self.peak, self._waiting_messages)
        self.peak_bytes = max(self.peak_bytes, self._waiting_bytes)
        if not self.overflowed and (
            self._waiting_messages > self.limit or self._waiting_bytes > self.max_bytes
        ):
            self.overflowed = True
            self._on_overflow(self)

    def flush(self) -> None:
        """Write this turn's batch: straight to the socket if nothing is
        ahead of it, else behind what the transport holds."""
        batch, self._batch = self._batch, []
        if self.closed or not batch:
            return
        data = b"".join(batch)
        if self._paused or self._waiting:  # paused since: keep the order
            self._wait(data, len(batch))
            return
        transport = self.transport
        if (
            self._direct
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
        self._fire_drained()

    def drained(self) -> Deferred[None]:
        """Fires when the queue is empty and the transport takes more: the
        pace for a catch-up that must not flood a slow client."""
        d: Deferred[None] = Deferred()
        if self.writable or self.closed:
            d.callback(None)
        else:
            self._drained.append(d)
        return d

    def _fire_drained(self) -> None:
        if (self.writable or self.closed) and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def close(self) -> None:
        """Drop what waits and stop producing for the transport."""
        if self.closed:
            return
        self.closed = True
        self._waiting.clear()
        self._waiting_messages = self._waiting_bytes = 0
        self._batch.clear()
        if getattr(self.transport, "producer", None) is self:
            self.transport.unregisterProducer()
        self._fire_drained()

    def fail(self) -> None:
        """Writing failed in a way the transport did not report: give up on
        the connection rather than leave messages that are never flushed."""
        self.close()
        abort = getattr(self.transport, "abortConnection", None) or self.transport.loseConnection
        abort()

    # IPushProducer, called by the transport
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._waiting and not self._paused and not self.closed:
            data, messages = self._waiting.popleft()
            self._waiting_messages -= messages
            self._waiting_bytes -= len(data)
            self.transport.write(data)
        self._fire_drained()

    def stopProducing(self) -> None:
        self.close()
