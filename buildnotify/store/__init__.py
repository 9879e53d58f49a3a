"""The event store: one writer thread with group commit, reads on a small
thread pool, a hook told of each commit that stored events (the bus), and
hooks that write more rows in the very transaction that stores events (the
relays' outbox), so neither is ever committed without the other.

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

from buildnotify.alerts import Alert
from buildnotify.delivery import Delivery
from buildnotify.events import BuildEvent
from buildnotify.store import database, queries
from buildnotify.store.batch import Recorded, record_batch
from buildnotify.store.cache import RecordCache
from buildnotify.store.stream import EVENTS, Stream
from buildnotify.store.writer import GroupCommitWriter

__all__ = ["AfterRecord", "Alert", "Recorded", "Store"]

log = logging.getLogger(__name__)

T = TypeVar("T")


#: called inside the writer's transaction with the events a batch stored
AfterRecord = Callable[[Connection, Sequence[BuildEvent]], None]


def _apply(
    conn: Connection,
    items: Sequence[Delivery | Callable[[Connection], Any]],
    cache: RecordCache | None,
    stream: Stream | None,
    after_record: Sequence[AfterRecord] = (),
) -> list[Any]:
    """One transaction's work: webhook deliveries are recorded together (they
    share lookups); other writes (claims, acks, settings) run in order. With
    several nodes, ``stream`` orders the events' ids by commit. Each of
    ``after_record`` is then given the stored events, in the same transaction."""
    deliveries = [item for item in items if isinstance(item, Delivery)]
    newest = None
    if deliveries and stream is not None:
        stream.append(conn, EVENTS)
        if cache is not None:  # under the lock: nobody else can append now
            newest = queries.newest_id(conn)
            if cache.stream_head != newest:
                cache.clear()  # another node wrote events (and their runs) since our last batch
    batch = record_batch(conn, deliveries, cache) if deliveries else []
    stored = [event for recorded in batch for event in recorded.events]
    if newest is not None and cache is not None:
        cache.stream_head = max((event.id for event in stored), default=newest)
    if stored:
        for hook in after_record:
            hook(conn, stored)
    recorded = iter(batch)
    return [next(recorded) if isinstance(item, Delivery) else item(conn) for item in items]


class Store:
    """``shared``: several hub nodes write this (PostgreSQL) database, so the
    writer orders the stream by commit (store/stream.py) and trusts what it
    cached only while no other node appended events since its last batch;
    False for a hub that is the database's only writer."""

    def __init__(
        self, engine: Engine, reactor: Any, readers: int | None = None, shared: bool = False
    ) -> None:
        self.engine = engine
        self.reactor = reactor
        self.shared = shared
        self.stream: Stream | None = None
        if shared and engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                self.stream = Stream.of(conn)
        # shared without the stream lock (SQLite, in tests) has nothing to check the cache under
        cache = RecordCache() if not shared or self.stream is not None else None
        #: run inside the transaction that stored events, with those events
        #: (e.g. the relays' enqueue); a failing hook fails the transaction
        self.after_record: list[AfterRecord] = []
        self._writer = GroupCommitWriter(
            engine,
            functools.partial(_apply, cache=cache, stream=self.stream, after_record=self.after_record),
            reactor,
            on_rollback=cache.clear if cache is not None else None,
        )
        if readers is None:  # PostgreSQL answers reads in parallel; SQLite's WAL readers hardly
            readers = 6 if engine.dialect.name == "postgresql" else 2
        self._readers = ThreadPool(minthreads=1, maxthreads=readers, name="buildnotify-reader")
        #: reads need no transaction: each is one or two SELECTs, and on
        #: PostgreSQL BEGIN and ROLLBACK would double their round trips
        self._reading = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        #: told (on the reactor thread) of each commit that stored events: the bus
        self.on_commit: Callable[[Recorded], None] | None = None

    @classmethod
    def open(cls, url: str, reactor: Any, shared: bool | None = None, name: str = "buildnotify") -> Store:
        """Create the engine and bring the schema to head (blocking: call at
        start-up, before the hub listens). ``shared`` defaults to True on
        PostgreSQL (any node may have siblings), False on SQLite. ``name``
        labels the connections on PostgreSQL (``pg_stat_activity``)."""
        engine = database.create(url, name=name)
        database.upgrade(engine)
        if shared is None:
            shared = engine.dialect.name == "postgresql"
        store = cls(engine, reactor, shared=shared)
        store.start()
        return store

    def start(self) -> None:
        self._writer.start()
        self._readers.start()

    def stop(self) -> Deferred[None]:
        d = self._writer.stop()

        def _done(_: object) -> None:
            self._readers.stop()
            self.engine.dispose()

        d.addCallback(_done)
        return d

    def record(self, delivery: Delivery) -> Deferred[Recorded]:
        """Fires once ``delivery`` is committed (or known already)."""
        d = self._writer.submit(delivery)
        d.addCallback(self._announce)
        return d

    def _announce(self, recorded: Recorded) -> Recorded:
        if recorded.events and self.on_commit is not None:
            try:
                self.on_commit(recorded)
            except Exception:  # a broken bus must not fail the webhook: it is stored
                log.exception("announcing committed events failed")
        return recorded

    def write(self, operation: Callable[[Connection], T]) -> Deferred[T]:
        """Run ``operation(connection)`` on the writer thread, in a group
        commit; fires with its result once committed."""
        return self._writer.submit(operation)

    def read(self, query: Callable[..., T], **kwargs: Any) -> Deferred[T]:
        """Run ``query(connection, **kwargs)`` on a reader thread."""

        def attempt() -> T:
            with self._reading.connect() as conn:
                return query(conn, **kwargs)

        return deferToThreadPool(
            self.reactor, self._readers, lambda: database.once_more_if_dropped(attempt, "reader")
        )

    def history(self, project: str | None = None, limit: int = 50, after_id: int | None = None) -> Deferred:
        return self.read(queries.history, project=project, limit=limit, after_id=after_id)

    @property
    def writer_stats(self) -> tuple[int, int]:
        """(batches committed, deliveries committed): their ratio is the group size."""
        return self._writer.batches, self._writer.items
