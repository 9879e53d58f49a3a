"""The single writer: one thread owns the write connection and commits
whatever has queued up since its last commit in one transaction (group
commit), so a burst of webhooks pays one fsync, not one each."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

from buildnotify.store import database

log = logging.getLogger(__name__)

_STOP = object()


class GroupCommitWriter:
    """Runs ``apply(connection, items) -> results`` on its own thread for
    batches of up to ``max_batch`` items; each submitted item's Deferred fires
    on the reactor thread once its transaction has committed.

    If a whole batch fails, each item is retried in a transaction of its own,
    so one bad item fails alone. ``on_rollback`` is called after every
    rollback (to drop caches that hold the rolled-back transaction's state).
    """

    def __init__(
        self,
        engine: Engine,
        apply: Callable[[Any, Sequence[Any]], list[Any]],
        reactor: IReactorFromThreads,
        max_batch: int = 512,
        name: str = "buildnotify-writer",
        on_rollback: Callable[[], None] | None = None,
    ) -> None:
        self._engine = engine
        self._apply = apply
        self._on_rollback = on_rollback
        self._reactor = reactor
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped: Deferred[None] = Deferred()
        self.batches = 0  # counters for benchmarks and metrics
        self.items = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, item: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._queue.put((item, d))
        return d

    def stop(self) -> Deferred[None]:
        """Finish what was submitted, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
        elif not self._stopped.called:
            self._stopped.callback(None)
        return self._stopped

    def _run(self) -> None:
        try:
            with self._engine.connect() as conn:
                while True:
                    batch, stop = self._next_batch()
                    if batch:
                        self._reactor.callFromThread(self._deliver, self._commit(conn, batch))
                    if stop:
                        break
        finally:
            self._reactor.callFromThread(self._stopped.callback, None)

    def _next_batch(self) -> tuple[list, bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _commit(self, conn: Any, batch: list) -> list[tuple[Deferred, Any]]:
        items = [item for item, _ in batch]
        try:
            results = database.once_more_if_dropped(lambda: self._transaction(conn, items), "writer")
        except Exception:
            if len(batch) == 1:
                return [(batch[0][1], Failure())]
            log.warning("group commit of %d items failed; retrying one by one", len(batch), exc_info=True)
            outcome = []
            for item, d in batch:
                try:
                    outcome.append((d, self._transaction(conn, [item])[0]))
                except Exception:
                    outcome.append((d, Failure()))
            return outcome
        self.batches += 1
        self.items += len(batch)
        return [(d, result) for (_, d), result in zip(batch, results, strict=True)]

    def _transaction(self, conn: Any, items: list) -> list:
        try:
            results = self._apply(conn, items)
            conn.commit()
            return results
        except Exception:
            try:
                conn.rollback()
            finally:
                if self._on_rollback is not None:
                    self._on_rollback()
            raise

    @staticmethod
    def _deliver(outcome: list[tuple[Deferred, Any]]) -> None:
        for d, result in outcome:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
