"""The event store: one writer thread with group commit, reads on a small
thread pool, and listeners told of each committed event (the bus hangs here).

Nothing here blocks the reactor thread.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from buildnotify.delivery import Delivery
from buildnotify.events import BuildEvent
from buildnotify.store import database, queries
from buildnotify.store.alerting import Alert
from buildnotify.store.batch import Recorded, record_batch
from buildnotify.store.cache import RecordCache
from buildnotify.store.writer import GroupCommitWriter

__all__ = ["Alert", "Recorded", "Store"]

log = logging.getLogger(__name__)

#: Told of each commit that stored events: ``listener(events, alerts)``.
Listener = Callable[[Sequence[BuildEvent], Sequence[Alert]], None]
T = TypeVar("T")


def _apply(
    conn: Connection, items: Sequence[Delivery | Callable[[Connection], Any]], cache: RecordCache | None
) -> list[Any]:
    """One transaction's work: webhook deliveries are recorded together (they
    share lookups); other writes (claims, acks, settings) run in order."""
    deliveries = [item for item in items if isinstance(item, Delivery)]
    recorded = iter(record_batch(conn, deliveries, cache) if deliveries else [])
    return [next(recorded) if isinstance(item, Delivery) else item(conn) for item in items]


class Store:
    """``single_writer``: this hub is the only one writing the database, so
    its writer may cache what it committed (runs, branches); pass False when
    several hubs share one PostgreSQL database."""

    def __init__(self, engine: Engine, reactor: Any, readers: int = 2, single_writer: bool = True) -> None:
        self.engine = engine
        self.reactor = reactor
        cache = RecordCache() if single_writer else None
        self._writer = GroupCommitWriter(
            engine,
            functools.partial(_apply, cache=cache),
            reactor,
            on_rollback=cache.clear if cache is not None else None,
        )
        self._readers = ThreadPool(minthreads=1, maxthreads=readers, name="buildnotify-reader")
        self._listeners: list[Listener] = []
        #: the greatest event id listeners have been told of (or stored before
        #: start): every event up to it is committed and announced, every later
        #: one will be, so a subscriber joining now has "seen" the stream up to it
        self.head = 0

    @classmethod
    def open(cls, url: str, reactor: Any, single_writer: bool = True) -> Store:
        """Create the engine and bring the schema to head (blocking: call at
        start-up, before the hub listens)."""
        engine = database.create(url)
        database.upgrade(engine)
        store = cls(engine, reactor, single_writer=single_writer)
        store.start()
        return store

    def start(self) -> None:
        """Start the writer and readers (blocking: reads the stream's head)."""
        with self.engine.connect() as conn:
            self.head = queries.newest_id(conn)
        self._writer.start()
        self._readers.start()

    def stop(self) -> Deferred[None]:
        d = self._writer.stop()

        def _done(_: object) -> None:
            self._readers.stop()
            self.engine.dispose()

        d.addCallback(_done)
        return d

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(events, alerts)`` on the reactor thread after each
        commit that stored events; returns a function that unsubscribes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def record(self, delivery: Delivery) -> Deferred[Recorded]:
        """Fires once ``delivery`` is committed (or known already)."""
        d = self._writer.submit(delivery)
        d.addCallback(self._announce)
        return d

    def _announce(self, recorded: Recorded) -> Recorded:
        if recorded.events:
            self.head = max(self.head, *(event.id for event in recorded.events))
            for listener in list(self._listeners):
                try:
                    listener(recorded.events, recorded.alerts)
                except Exception:  # a broken listener must not fail the webhook
                    log.exception("event listener %r failed", listener)
        return recorded

    def write(self, operation: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``operation(connection)`` on the writer thread, in a group
        commit; fires with its result once committed."""
        return self._writer.submit(operation)

    def read(self, query: Callable[..., T], **kwargs: Any) -> Deferred[T]:
        """Run ``query(connection, **kwargs)`` on a reader thread."""
        return self._read(query, **kwargs)

    def history(self, project: str | None = None, limit: int = 50, after_id: int | None = None) -> Deferred:
        return self._read(queries.history, project=project, limit=limit, after_id=after_id)

    def _read(self, query: Callable[..., Any], **kwargs: Any) -> Deferred:
        def run() -> Any:
            with self.engine.connect() as conn:
                return query(conn, **kwargs)

        return deferToThreadPool(self.reactor, self._readers, run)

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(batches committed, deliveries committed): their ratio is the group size."""
        return self._writer.batches, self._writer.items
