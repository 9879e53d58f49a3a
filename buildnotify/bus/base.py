"""What every bus does: hold consumers by kind and hand each message to
each of them, so that one that raises never keeps the others (or the
producer) from theirs."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from twisted.internet.defer import Deferred

from buildnotify.alerts import Alert
from buildnotify.events import BuildEvent, utcnow
from buildnotify.metrics import Metrics
from buildnotify.store.batch import Recorded

log = logging.getLogger("buildnotify.bus")
T = TypeVar("T")

#: Told of committed events in stream order: ``listener(events, alerts)``.
EventListener = Callable[[Sequence[BuildEvent], Sequence[Alert]], None]


@dataclasses.dataclass(frozen=True)
class Message:
    """One message: ``id`` orders the messages of the whole hub (all nodes),
    ``body`` is plain JSON data, ``node`` names the node that sent it."""

    id: int
    kind: str
    body: dict[str, Any]
    node: str


MessageConsumer = Callable[[Message], None]


class Bus:
    """The interface, and the dispatch both implementations share.

    ``head`` is the newest event id handed to the event listeners: every
    event up to it is committed and announced, every later one will be; a
    watcher that subscribes now has "seen" the stream up to it.
    """

    def __init__(self, node: str, metrics: Metrics | None = None) -> None:
        self.node = node
        self.metrics = metrics or Metrics()
        self.head = 0
        self._event_listeners: list[EventListener] = []
        self._consumers: dict[str, list[MessageConsumer]] = {}

    async def start(self) -> None:
        """Begin after what is stored now (blocking reads are fine: start-up)."""

    def stop(self) -> Deferred[None] | None:
        return None

    # -- producers -------------------------------------------------------------------

    def committed(self, recorded: Recorded) -> None:
        """The store committed ``recorded`` on this node (called on the reactor)."""
        raise NotImplementedError

    def publish(self, kind: str, body: dict[str, Any]) -> Deferred[Message]:
        """Send ``body`` (plain JSON data) to every node's consumers of ``kind``,
        this one's included; fires with the message once it is sent."""
        raise NotImplementedError

    def write_and_publish(
        self, kind: str, operation: Callable[[Connection], tuple[T, dict[str, Any] | None]]
    ) -> Deferred[T]:
        """Run ``operation(connection)`` on the store's writer; it returns
        (result, body): ``body`` (None: nothing to say) is published as a
        message of ``kind`` committed with the operation's writes, so that
        every node sees changes of one row in the order they were stored
        (two claims of one build made on two nodes). Fires with ``result``."""
        raise NotImplementedError

    # -- consumers -------------------------------------------------------------------

    def subscribe_events(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener(events, alerts)`` with each batch of committed
        events, in stream order; returns a function that unsubscribes."""
        self._event_listeners.append(listener)
        return lambda: _discard(self._event_listeners, listener)

    def subscribe(self, kind: str, consumer: MessageConsumer) -> Callable[[], None]:
        """Call ``consumer(message)`` with every message of ``kind``."""
        consumers = self._consumers.setdefault(kind, [])
        consumers.append(consumer)
        return lambda: _discard(consumers, consumer)

    def _dispatch_events(self, events: Sequence[BuildEvent], alerts: Sequence[Alert]) -> None:
        if not events:
            return
        self.head = max(self.head, events[-1].id)
        self._observe_lag(events)
        for listener in list(self._event_listeners):
            try:
                listener(events, alerts)
            except Exception:
                log.exception("event listener %r failed", listener)

    def _observe_lag(self, events: Sequence[BuildEvent]) -> None:
        """Seconds from each event's receipt (on whichever node) to now, its
        dispatch here: what NOTIFY, the read and a busy reactor add up to."""
        now = utcnow()
        for event in events:
            if event.received_at is not None:
                self.metrics.bus_lag.observe(max(0.0, (now - event.received_at).total_seconds()))

    def _dispatch(self, message: Message) -> None:
        for consumer in list(self._consumers.get(message.kind, ())):
            try:
                consumer(message)
            except Exception:
                log.exception("%s consumer %r failed", message.kind, consumer)


def encode(body: dict[str, Any]) -> str:
    """A message body as stored: JSON, so both buses carry the same values
    (a body that would not survive the database fails on either)."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def _discard(items: list[Any], item: Any) -> None:
    if item in items:
        items.remove(item)
