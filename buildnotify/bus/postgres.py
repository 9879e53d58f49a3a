"""The bus of several hub nodes on one PostgreSQL database.

Every transaction that appends events or messages sends ``NOTIFY`` with
only its kind (store/stream.py), so NOTIFY's payload limit never matters.
Each node LISTENs on a connection of its own (a thread blocks on it) and,
when told, reads what is new by id from the database: events after
``head`` and messages after the last one it handed on. Ids become visible
in commit order, so reading by id never skips or repeats. Events committed
on this node take the same path (a node never hands on an event before an
older one committed elsewhere).

When the LISTEN connection drops (a restart, ``pg_terminate_backend``), the
thread reconnects with backoff and the node reads everything it missed; a
slow poll (``poll`` seconds) covers the time in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from buildnotify.alerts import Alert
from buildnotify.bus.base import Bus, Message, T, encode
from buildnotify.events import BuildEvent
from buildnotify.metrics import Metrics
from buildnotify.store import Store, queries, stream
from buildnotify.store.batch import Recorded

log = logging.getLogger("buildnotify.bus")

#: events or messages read at a time
PAGE = 1000
#: seconds before reading again after a read failed while news came in
RETRY_READ = 0.5
#: seconds a LISTEN connection must last for a reconnect to be immediate
STEADY = 10.0


class PostgresBus(Bus):
    def __init__(
        self, store: Store, node: str, poll: float = 2.0, clock: Any = None, metrics: Metrics | None = None
    ) -> None:
        super().__init__(node, metrics)
        if store.stream is None:
            raise ValueError("PostgresBus needs a shared store (Store(..., shared=True))")
        self.store = store
        self.stream = store.stream
        self.reactor = store.reactor
        self.last_message = 0
        self._reading = False
        self._again = False
        self._stopping = threading.Event()
        self._pending = threading.Event()  # a poke is on its way to the reactor
        self._thread = threading.Thread(target=self._listen, name="buildnotify-listen", daemon=True)
        self._poll = LoopingCall(self.poke)
        self._retry: Any = None  # a read again after a failed one (RETRY_READ)
        self._poll.clock = clock or self.reactor
        self._interval = poll
        self.connected = threading.Event()  # the LISTEN connection is up (for tests)

    async def start(self) -> None:
        self.head, self.last_message = await self.store.read(_positions)
        self._thread.start()
        self._poll.start(self._interval, now=False)

    def stop(self) -> None:
        """Hand nothing more on: a commit or a notification after this reads nothing."""
        self._stopping.set()
        if self._poll.running:
            self._poll.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

    # -- producers -------------------------------------------------------------------

    def committed(self, recorded: Recorded) -> None:
        self.poke()

    def publish(self, kind: str, body: dict[str, Any]) -> Deferred[Message]:
        text = encode(body)

        def send(conn: Connection) -> int:
            self.stream.append(conn, stream.MESSAGES)
            return stream.send(conn, kind, self.node, text)

        d = self.store.write(send)
        d.addCallback(lambda message_id: Message(message_id, kind, json.loads(text), self.node))
        return d

    def write_and_publish(
        self, kind: str, operation: Callable[[Connection], tuple[T, dict[str, Any] | None]]
    ) -> Deferred[T]:
        def write(conn: Connection) -> T:
            # the stream's lock first, before the operation locks any row: a
            # second change of the row (on any node) waits for this commit and
            # gets a higher message id, and no lock is taken in the opposite
            # order to a transaction that stores events (which clears claims)
            self.stream.append(conn, stream.MESSAGES)
            result, body = operation(conn)
            if body is not None:
                stream.send(conn, kind, self.node, encode(body))
            return result

        return self.store.write(write)

    # -- reading ---------------------------------------------------------------------

    def poke(self) -> None:
        """Something may be new: read it (once at a time; a poke meanwhile
        makes the reader look again)."""
        self._pending.clear()
        if self._stopping.is_set():  # the store may be stopping too: no read, no dispatch
            return
        if self._reading:
            self._again = True
            return
        self._reading = True
        Deferred.fromCoroutine(self._read_news())

    async def _read_news(self) -> None:
        try:
            while True:
                self._again = False
                events, alerts, rows = await self.store.read(
                    _news, after_event=self.head, after_message=self.last_message
                )
                if self._stopping.is_set():
                    break
                self._hand_on(
                    events, alerts, [Message(i, kind, json.loads(body), node) for i, kind, node, body in rows]
                )
                if self._stopping.is_set() or (not self._again and len(events) < PAGE and len(rows) < PAGE):
                    break
        except Exception as e:  # the database is away: the poll (or the reconnect) tries again
            log.warning("could not read what the bus announced: %s", e)
            if self._again and not (self._retry and self._retry.active()):
                # told of news while the read failed: look again soon, not at the poll
                self._retry = self._poll.clock.callLater(RETRY_READ, self.poke)
        finally:
            self._reading = False

    def _hand_on(self, events: list[BuildEvent], alerts: list[Alert], messages: list[Message]) -> None:
        """Dispatch events and messages merged in id order (they share one
        sequence), up to the end of the shorter full page (the rest is read
        again next time)."""
        last = min(
            [page[-1].id for page in (events, messages) if len(page) == PAGE],
            default=None,
        )
        if last is not None:
            events = [e for e in events if e.id <= last]
            messages = [m for m in messages if m.id <= last]
        run: list[BuildEvent] = []
        pending = iter(messages)
        message = next(pending, None)
        for event in events:
            while message is not None and message.id < event.id:
                self._dispatch_run(run, alerts)
                run = []
                self.last_message = message.id
                self._dispatch(message)
                message = next(pending, None)
            run.append(event)
        self._dispatch_run(run, alerts)
        while message is not None:
            self.last_message = message.id
            self._dispatch(message)
            message = next(pending, None)

    def _dispatch_run(self, run: list[BuildEvent], alerts: list[Alert]) -> None:
        if run:
            ids = {event.id for event in run}
            self._dispatch_events(run, [alert for alert in alerts if alert.event.id in ids])

    # -- the LISTEN thread -------------------------------------------------------------

    def _listen(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                conn = self._connect()
            except Exception as e:
                log.warning("cannot listen for the bus (%s); retrying in %g s", e, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)
                continue
            connected_at = time.monotonic()
            self.connected.set()
            self._poke_from_thread()  # read whatever came while we were not listening
            self.reactor.callFromThread(self._dispatch, Message(0, stream.ACCESS, {}, "database"))
            try:
                while not self._stopping.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        if notify.payload == stream.ACCESS:
                            self.reactor.callFromThread(
                                self._dispatch, Message(0, stream.ACCESS, {}, "database")
                            )
                        else:
                            self._poke_from_thread()
            except Exception as e:
                if not self._stopping.is_set():
                    log.warning("lost the bus's database connection (%s); reconnecting", e)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    conn.close()
            if time.monotonic() - connected_at < STEADY:  # lost at once: back off, no reconnect loop
                self._stopping.wait(delay)
                delay = min(delay * 2, 10.0)
            else:
                delay = 0.5

    def _connect(self) -> Any:
        raw = self.store.engine.raw_connection()
        raw.detach()  # ours for good: not returned to the pool
        conn = raw.dbapi_connection
        try:
            conn.autocommit = True
            conn.execute(f'LISTEN "{self.stream.channel}"')
        except BaseException:
            conn.close()  # detached: no pool would ever close it
            raise
        return conn

    def _poke_from_thread(self) -> None:
        if not self._pending.is_set():  # coalesce a burst of notifications
            self._pending.set()
            self.reactor.callFromThread(self.poke)


def _positions(conn: Connection) -> tuple[int, int]:
    return queries.newest_id(conn), stream.newest_message_id(conn)


def _news(conn: Connection, after_event: int, after_message: int) -> tuple[list, list, list]:
    """Events and messages from one snapshot: commits become visible in id
    order, so a snapshot holds a prefix of the stream and the merge hands
    both on exactly in commit order (a mute before the event after it)."""
    conn = conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        events, alerts = stream.events_after(conn, after_event, PAGE)
        return events, alerts, stream.messages_after(conn, after_message, PAGE)
