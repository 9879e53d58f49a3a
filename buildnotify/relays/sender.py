"""The sender: takes due messages from the outbox, sends them, records each
outcome. Runs off the ingest path on the hub's clock: a pass every
``poll`` seconds, and one more soon after a commit that stored events.

Exactly once as far as the hub can make it: a message is marked sent in the
first write after its 2xx is seen, and a sent message is never claimed
again. What is left is the window between the 2xx and that commit: a node
that dies inside it sends the message once more when its lease runs out;
the ``X-Buildnotify-Delivery`` header (the Message-ID of mail) carries the
same message id both times, so a receiver can drop the repeat.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from buildnotify.relays import http, mail, outbox
from buildnotify.relays.outcome import RETRY, SENT, Outcome, backoff
from buildnotify.relays.settings import MAX_TIMEOUT, RelaySettings

log = logging.getLogger("buildnotify.relays")

#: messages claimed per pass (and sent at once)
BATCH = 50
#: how long a claim is ours: longer than any attempt takes (twice a relay's timeout at most)
LEASE = timedelta(minutes=5)
assert LEASE.total_seconds() > 2 * MAX_TIMEOUT + 30

#: told of each outcome: (relay name, "sent" | "retry" | "dead"); the metrics
Counted = Callable[[str, str], None]


class RelaySender:
    def __init__(
        self,
        store: Any,
        relays: Mapping[str, RelaySettings],
        node: str,
        reactor: Any,
        clock: Any = None,
        poll: float = 1.0,
        counted: Counted | None = None,
    ) -> None:
        """``clock`` (default: the reactor) dates everything and runs the
        polling; tests pass a ``task.Clock``."""
        self.store = store
        self.relays = dict(relays)
        self.node = node
        self.reactor = reactor
        self.clock = clock or reactor
        self.counted = counted
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._http = HTTPClient(Agent(reactor, pool=self._pool))
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._poll = poll
        self._running: Deferred[None] | None = None
        self._waiting: list[Deferred[None]] = []
        self._stopped = False

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    def start(self) -> None:
        self._loop.start(self._poll, now=True)

    async def stop(self) -> None:
        """Stop polling, let the pass under way finish, close connections."""
        self._stopped = True
        if self._loop.running:
            self._loop.stop()
        if self._running is not None:
            finished: Deferred[None] = Deferred()
            self._waiting.append(finished)
            await finished
        await self._pool.closeCachedConnections()

    def tick(self) -> Deferred[None]:
        """A whole pass that starts after this call: fires once it is done
        (a pass under way is followed by one more; calls meanwhile share it)."""
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if self._running is None:
            self._next_pass()
        return done

    def wake(self, *_: Any) -> None:
        """Something was committed: look for due messages soon."""
        if not self._stopped:
            self.tick()

    def _next_pass(self) -> None:
        waiting, self._waiting = self._waiting, []
        if self._stopped:
            self._running = None
            for d in waiting:
                d.callback(None)
            return
        self._running = Deferred.fromCoroutine(self._pass())

        def finished(result: Any) -> None:
            if isinstance(result, Failure):
                log.error("relay pass failed: %s", result.getErrorMessage())
            self._running = None
            if self._waiting:  # first: a waiter's callback may ask for yet another pass
                self._next_pass()
            for d in waiting:
                d.callback(None)

        self._running.addBoth(finished)

    async def _pass(self) -> None:
        while True:
            claim = functools.partial(
                outbox.claim,
                node=self.node,
                now=self.now(),
                lease=LEASE,
                limit=BATCH,
                relays=list(self.relays),
            )
            claimed = await self.store.write(claim)
            if not claimed:
                return
            await DeferredList([Deferred.fromCoroutine(self._send(m)) for m in claimed])
            if len(claimed) < BATCH or self._stopped:
                return

    async def _send(self, message: outbox.Claimed) -> None:
        relay = self.relays[message.relay]
        try:
            if relay.kind == "smtp":
                outcome = await mail.send(relay, message, self.now(), self.reactor)
            else:
                outcome = await http.post(self._http, relay, message, self.now(), self.reactor)
        except Exception as e:  # a bug of ours: keep the message, say what happened
            log.exception("relay %s: sending message %d failed", relay.name, message.id)
            outcome = Outcome(RETRY, f"{type(e).__name__}: {e}")
        try:
            await self._record(relay, message, outcome)
        except Exception as e:
            log.error("relay %s: recording message %d's outcome failed: %s", relay.name, message.id, e)

    async def _record(self, relay: RelaySettings, message: outbox.Claimed, outcome: Outcome) -> None:
        now = self.now()
        if outcome.kind == SENT:
            await self.store.write(lambda conn: outbox.sent(conn, message.id, now))
            self._count(relay.name, "sent")
            return
        error = outcome.error or "failed"
        give_up_at = message.created_at + timedelta(seconds=relay.give_up_after)
        next_at = None
        if outcome.kind == RETRY and now < give_up_at:
            attempts = message.attempts + 1
            wait = outcome.retry_after
            if wait is None:
                wait = backoff(attempts)
            next_at = min(give_up_at, now + timedelta(seconds=wait))

        def write(conn: Any) -> None:
            outbox.failed(conn, message.id, error, next_at)
            if next_at is not None and outcome.retry_after is not None:
                outbox.postpone(conn, relay.name, next_at, now)

        await self.store.write(write)
        if next_at is None:
            self._count(relay.name, "dead")
            log.warning(
                "relay %s: message %d is dead after %d attempts: %s",
                relay.name,
                message.id,
                message.attempts + 1,
                error,
            )
        else:
            self._count(relay.name, "retry")
            log.info("relay %s: message %d will be retried: %s", relay.name, message.id, error)

    def _count(self, relay: str, outcome: str) -> None:
        if self.counted is not None:
            try:
                self.counted(relay, outcome)
            except Exception:
                log.exception("counting a relay outcome failed")
