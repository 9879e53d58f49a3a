"""The PB client every front end uses: connect, log in, watch, push what the
hub sends to the front end's callbacks, and reconnect with backoff and
resume when the connection drops.

A front end passes a *listener*: any object with some of these methods
(missing ones are skipped; :class:`Listener` has them all as no-ops)::

    on_event(event)     an event dict (docs/protocol.md), each id once, in order
    on_alert(alert)     an alert dict: the user's own commit broke or fixed a build
    on_claim(claim)     a claim dict with "state": claimed, released, cleared
    on_state(state)     a State: connecting, connected, catching up, live,
                        disconnected (with retry_in), stopped
    on_goodbye(reason)  the hub said goodbye ("signed in elsewhere", "too slow")
    on_access_lost(projects, reason)  these projects are no longer shown to this
                        user (made private, or the user left their members)

and drives the client with ``start()`` (a Deferred that fires with an
:class:`Outcome` when the client stops for good) and ``stop()``::

    client = WatchClient(listener, hub="tcp:127.0.0.1:8787", projects=["acme/widget"],
                         resume=ResumeFile.for_hub("tcp:127.0.0.1:8787", None))
    outcome = await client.start()

``hub`` may name several nodes of one hub (a list, or comma separated):
the client connects to the first that answers and, when a connection fails
or is lost, moves on to the next, resuming after the last event it received
(event ids are one stream across the nodes). Endpoints that fail in a row
are tried at once; once each has failed, the retry policy's backoff waits.
The first attempt after losing a live connection waits a random part of
``reconnect_spread`` first, so that the clients of a node that went away do
not all arrive at the next one in the same instant.

The client never gives up on its own while the hub is unreachable; it stops
for good only when told to (``stop()``), when the hub says another client of
the same developer signed in ("signed in elsewhere": reconnecting would only
fight that client), or when the hub refuses the login or the watch (a wrong
token or a private project does not get better by retrying).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import LoopingCall, deferLater
from twisted.python.failure import Failure
from twisted.spread import pb

from buildnotify.client.resume import ResumeFile
from buildnotify.client.settings import DEFAULT_HUB, hub_list
from buildnotify.protocol import SECURITY, BadArgument, LoginFailed, NotAllowed, raised_remotely

log = logging.getLogger("buildnotify.client")

#: seconds over which the first attempts after losing a live connection spread
RECONNECT_SPREAD = 5.0
SIGNED_IN_ELSEWHERE = "signed in elsewhere"
TOO_SLOW = "too slow"
#: the hub's errors after which retrying cannot help
_REFUSALS = (LoginFailed, NotAllowed, BadArgument)


class Phase(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"  # logged in; watch not called yet
    CATCHING_UP = "catching up"  # watch(since=...) called; replayed events are arriving
    LIVE = "live"
    DISCONNECTED = "disconnected"  # waiting retry_in seconds before the next attempt
    STOPPED = "stopped"  # for good; see Outcome


@dataclasses.dataclass(frozen=True)
class State:
    """A change of the connection's state, for the front end to show."""

    phase: Phase
    message: str  # for people, e.g. "disconnected (connection refused); retrying in 3 s"
    hub: str  # the endpoint this state is about (connecting to, live on, lost)
    attempt: int = 0  # failed attempts since the last time the client was live
    retry_in: float | None = None  # DISCONNECTED: seconds until the next attempt (0: at once)
    since: int | None = None  # CATCHING_UP: the id the catch-up starts after
    watch: dict[str, Any] | None = None  # LIVE: the hub's answer to watch()
    gap: bool = False  # LIVE: events after `since` were pruned before we could catch up


class Ending(enum.StrEnum):
    STOPPED = "stopped"  # stop() was called
    SIGNED_IN_ELSEWHERE = SIGNED_IN_ELSEWHERE  # another client of the same developer took over
    REFUSED = "refused"  # the hub refused the login or the watch


@dataclasses.dataclass(frozen=True)
class Outcome:
    ending: Ending
    message: str


class Listener:
    """Callbacks of a front end; override what you need."""

    def on_event(self, event: dict[str, Any]) -> None:
        pass

    def on_alert(self, alert: dict[str, Any]) -> None:
        pass

    def on_claim(self, claim: dict[str, Any]) -> None:
        pass

    def on_state(self, state: State) -> None:
        pass

    def on_goodbye(self, reason: str) -> None:
        pass

    def on_access_lost(self, projects: list[str], reason: str) -> None:
        pass


def default_retry_policy() -> Callable[[int], float]:
    """1 s, 1.5 s, 2.25 s, ... up to 60 s, each plus up to 1 s of jitter (so a
    restarted hub is not hit by every client in the same instant)."""
    return backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=1.5, jitter=random.random)


class _Refused(Exception):
    """The hub refused us; retrying will not help."""


class ConnectionLost(Exception):
    pass


class NotConnected(Exception):
    """A call was made while the client had no session."""


class _Link:
    """One connection: the broker, and Deferreds that fail when it is lost
    (a PBClientFactory connected through an endpoint never notices)."""

    def __init__(self, broker: pb.Broker) -> None:
        self.broker = broker
        self.lost = bool(getattr(broker, "disconnected", False))
        self.goodbye: str | None = None  # what the hub said before dropping us
        self._guards: list[Deferred[Any]] = []
        self._closed: list[Deferred[None]] = []
        if not self.lost:
            broker.notifyOnDisconnect(self._on_lost)

    def _on_lost(self) -> None:
        self.lost = True
        guards, self._guards = self._guards, []
        for d in guards:
            if not d.called:
                d.errback(ConnectionLost(self.goodbye or "connection lost"))
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)

    def guard(self, d: Deferred[Any]) -> Deferred[Any]:
        """``d``'s result, or ConnectionLost if the connection goes first."""
        out: Deferred[Any] = Deferred()
        if self.lost:
            d.addErrback(lambda _: None)
            out.errback(ConnectionLost(self.goodbye or "connection lost"))
            return out
        self._guards.append(out)

        def done(result: Any) -> None:
            if out.called:
                return None  # the connection was lost first; swallow this result
            self._guards.remove(out)
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
            return None

        d.addBoth(done)
        return out

    def closed(self) -> Deferred[None]:
        """Fires when the connection is gone."""
        d: Deferred[None] = Deferred()
        if self.lost:
            d.callback(None)
        else:
            self._closed.append(d)
        return d

    def close(self, abort: bool = False) -> None:
        transport = self.broker.transport
        if self.lost or transport is None:
            return
        if abort and hasattr(transport, "abortConnection"):
            transport.abortConnection()
        else:
            transport.loseConnection()


class _Mind(pb.Referenceable):
    """What the hub calls; one per connection, so a stale connection's late
    calls are recognised and ignored."""

    def __init__(self, client: WatchClient, link: _Link) -> None:
        self.client = client
        self.link = link

    def _current(self) -> bool:
        return self.client._link is self.link and self.link.goodbye is None

    def remote_event(self, event: Any) -> None:
        if self._current():
            self.client._received_event(event)

    def remote_events(self, page: Any) -> None:
        """A catch-up page: JSON of a list of events, as if each came by ``event``."""
        if self._current():
            self.client._received_page(page)

    def remote_alert(self, alert: Any) -> None:
        if self._current():
            self.client._received_alert(alert)

    def remote_claim(self, claim: Any) -> None:
        if self._current() and isinstance(claim, dict):
            self.client._notify("on_claim", claim)

    def remote_goodbye(self, reason: Any) -> None:
        if self._current():
            self.client._received_goodbye(self.link, str(reason))

    def remote_unwatched(self, projects: Any, reason: Any) -> None:
        if self._current() and isinstance(projects, list) and all(isinstance(p, str) for p in projects):
            self.client._lost_access(projects, str(reason))

    def remote_ping(self) -> str:
        return "pong"


class WatchClient:
    """A watching session that survives disconnects. See the module doc."""

    def __init__(
        self,
        listener: Any,
        *,
        hub: str | Sequence[str] = DEFAULT_HUB,
        user: str | None = None,
        token: str | None = None,
        projects: Sequence[str] | None = None,
        resume: ResumeFile | None = None,
        since: int | None = None,
        start_live: bool = False,
        reactor: Any = None,
        clock: Any = None,
        retry_policy: Callable[[int], float] | None = None,
        login_timeout: float = 30.0,
        keepalive: float | None = 60.0,
        keepalive_timeout: float = 20.0,
        reconnect_spread: float = RECONNECT_SPREAD,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        """
        :param hub: the hub's endpoint, or every node's: a list, or comma
            separated; tried in order.
        :param user: log in as this developer (with ``token``); None: anonymously.
        :param projects: what to watch; None (developers only): the projects
            the developer watched before.
        :param resume: where the last seen event id is kept across restarts;
            None: not kept (the client still resumes across reconnects).
        :param since: start after this event id (default: the resume file's;
            None there too: live events only).
        :param start_live: ignore the resume file's position and start with
            live events (the file is still kept up to date).
        :param reactor: connects to the hub (default: the global reactor).
        :param clock: times the waits between attempts, the keepalive pings
            and the login and ping timeouts (default: ``reactor``); tests pass
            a ``task.Clock``. Connecting always runs on ``reactor``.
        :param keepalive: ping the hub this often (seconds) and drop the
            connection when it does not answer in ``keepalive_timeout``;
            None: never (rely on the hub's heartbeat and TCP).
        :param reconnect_spread: after losing a live connection, wait
            ``reconnect_spread * random_source()`` seconds (on ``clock``)
            before the first attempt; ``random_source`` returns a float in
            [0, 1) (tests pass a seeded one).
        """
        if user is not None and not token:
            raise ValueError(f"logging in as {user} needs a token")
        if user is None and not projects:
            raise ValueError("an anonymous client must name the projects to watch")
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.hubs = hub_list(hub)
        if not self.hubs:
            raise ValueError(f"no hub endpoint in {hub!r}")
        self.listener = listener
        self.hub = self.hubs[0]  # the endpoint in use, or being tried
        self.user = user
        self._token = token
        self.projects = list(projects) if projects is not None else None
        self.resume = resume
        self.reactor = reactor
        self.clock = clock or reactor
        self.retry_policy = retry_policy or default_retry_policy()
        self.login_timeout = login_timeout
        self.keepalive = keepalive
        self.keepalive_timeout = keepalive_timeout
        self.reconnect_spread = reconnect_spread
        self.random_source = random_source
        self._at_once = False  # reconnect() asked: the next attempt does not wait
        if since is None and resume is not None and not start_live:
            since = resume.load()
        self._last_id: int | None = since  # the greatest event id received (or resumed from)
        # where the stream stood when we first watched without a position: where
        # to resume from if no event arrives before the next reconnect or restart
        self._floor: int | None = None
        self._saved_id: int | None = since
        self._save_call: Any = None
        self.state: State | None = None
        self.outcome: Outcome | None = None
        self.duplicates = 0  # events dropped because their id was not new (should stay 0)
        self._alerts_seen: set[int] = set()
        self._link: _Link | None = None
        self._perspective: pb.RemoteReference | None = None
        self._pending: Deferred[Any] | None = None  # a connect or a backoff wait, cancelled by stop()
        self._running: Deferred[Outcome] | None = None
        self._waiting: list[Deferred[Outcome]] = []

    # -- for front ends ---------------------------------------------------------------

    @property
    def last_id(self) -> int | None:
        """The greatest event id received (or resumed from)."""
        return self._last_id

    @property
    def position(self) -> int | None:
        """Where the next watch resumes: ``last_id``, or, before any event
        arrived, where the stream stood when first watched."""
        return self._last_id if self._last_id is not None else self._floor

    @property
    def perspective(self) -> pb.RemoteReference | None:
        """The current session, for other calls (claim, ack, history...)."""
        return self._perspective

    @property
    def broker(self) -> pb.Broker | None:
        return self._link.broker if self._link is not None and not self._link.lost else None

    def call(self, method: str, *args: Any) -> Deferred[Any]:
        """``callRemote`` on the current session; fails with NotConnected
        when there is none."""
        if self._perspective is None:
            return defer.fail(NotConnected(f"not connected to {self.hub}"))
        return self._perspective.callRemote(method, *args)

    def start(self) -> Deferred[Outcome]:
        """Connect and keep watching; fires with the Outcome when stopped for good."""
        if self._running is None:
            self._running = Deferred.fromCoroutine(self._run())
            self._running.addCallbacks(self._finished, self._crashed)
        return self._when_done()

    def stop(self) -> Deferred[Outcome]:
        """Stop for good: close the connection, save the position."""
        self._end(Outcome(Ending.STOPPED, "stopped"))
        if self._running is None:
            self._finished(self.outcome)  # type: ignore[arg-type]
        return self._when_done()

    def reconnect(self) -> None:
        """Drop the current connection (or skip the backoff wait) and connect again."""
        if self._link is not None:
            self._at_once = True
            self._link.close(abort=True)
        elif self._pending is not None and self.state and self.state.phase == Phase.DISCONNECTED:
            self._pending.cancel()

    # -- the loop ---------------------------------------------------------------------

    def _when_done(self) -> Deferred[Outcome]:
        d: Deferred[Outcome] = Deferred()
        if self.outcome is not None and (self._running is None or self._running.called):
            d.callback(self.outcome)
        else:
            self._waiting.append(d)
        return d

    def _end(self, outcome: Outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
        if self._pending is not None:
            self._pending.cancel()
        if self._link is not None:
            self._link.close()

    def _finished(self, outcome: Outcome) -> None:
        self._flush()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(outcome)

    def _crashed(self, failure: Failure) -> None:
        log.error("client crashed: %s", failure.getTraceback())
        if self.outcome is None:
            self.outcome = Outcome(Ending.STOPPED, f"crashed: {failure.getErrorMessage()}")
        self._finished(self.outcome)

    async def _run(self) -> Outcome:
        attempt = 0  # failed attempts since the client was last live
        backoffs = 0  # waits of the retry policy since then
        untried = len(self.hubs)  # attempts left before the next backoff
        index = 0
        while self.outcome is None:
            self.hub = self.hubs[index]
            self._set_state(Phase.CONNECTING, f"connecting to {self.hub}", attempt=attempt)
            went_live = False
            reason = "connection lost"
            try:
                went_live = await self._session(attempt)
            except _Refused as e:
                self._end(Outcome(Ending.REFUSED, str(e)))
                break
            except CancelledError:
                pass
            except Exception as e:  # anything the network or the hub throws at us: retry
                reason = describe(e)
            finally:
                if self._link is not None and self._link.goodbye:
                    reason = f"the hub said goodbye: {self._link.goodbye}"
                self._perspective = None
                self._link = None
            if self.outcome is not None:
                break
            index = (index + 1) % len(self.hubs)
            untried -= 1
            if went_live:
                attempt = backoffs = 0
                untried = len(self.hubs)
                delay = self.reconnect_spread * self.random_source()
            elif untried > 0:
                delay = 0.0  # another node may answer
            else:
                delay = max(0.0, float(self.retry_policy(backoffs)))
                backoffs += 1
                untried = len(self.hubs)
            if self._at_once:
                self._at_once, delay = False, 0.0
            attempt += 1
            self._set_state(
                Phase.DISCONNECTED,
                f"disconnected from {self.hub} ({reason}); {self._next_attempt(self.hubs[index], delay)}",
                attempt=attempt,
                retry_in=delay,
            )
            if not delay:
                continue
            self._pending = deferLater(self.clock, delay, lambda: None)
            try:
                await self._pending
            except CancelledError:
                pass
            finally:
                self._pending = None
        assert self.outcome is not None
        self._set_state(Phase.STOPPED, self.outcome.message)
        return self.outcome

    def _next_attempt(self, hub: str, delay: float) -> str:
        if hub == self.hub:
            return f"retrying in {_seconds(delay)}"
        return f"trying {hub} " + (f"in {_seconds(delay)}" if delay else "now")

    async def _session(self, attempt: int) -> bool:
        """One connection, from connecting to losing it; True if it went live."""
        factory = pb.PBClientFactory(security=SECURITY)
        self._pending = clientFromString(self.reactor, self.hub).connect(factory)
        try:
            broker = await self._pending
        finally:
            self._pending = None
        link = self._link = _Link(broker)
        try:
            if self.outcome is not None:
                return False
            root = await link.guard(factory.getRootObject())
            mind = _Mind(self, link)
            if self.user is not None:
                login = root.callRemote("login", self.user, self._token, mind)
            else:
                login = root.callRemote("loginAnonymous", mind)
            login.addTimeout(self.login_timeout, self.clock)
            perspective = await _refusable(link.guard(login))
            self._perspective = perspective  # keep it: dropping the reference logs us out
            keepalive = self._start_keepalive(link, perspective)
            try:
                since = self.position
                who = f"as {self.user}" if self.user else "anonymously"
                self._set_state(Phase.CONNECTED, f"connected to {self.hub} {who}", attempt=attempt)
                if since is not None:
                    self._set_state(
                        Phase.CATCHING_UP, f"catching up after event {since}", attempt=attempt, since=since
                    )
                answer = await _refusable(link.guard(perspective.callRemote("watch", self.projects, since)))
                self._watched(answer, since)
                await link.closed()
                return True
            finally:
                if keepalive is not None and keepalive.running:
                    keepalive.stop()
        finally:
            link.close()

    def _watched(self, answer: Any, since: int | None) -> None:
        if not isinstance(answer, dict):
            answer = {}
        if since is None and self._last_id is None:
            # Where this stream starts: resume from here if the connection drops
            # before any event arrives. Only a starting point, never a reason to
            # drop events (last_id moves with received events only).
            stream_at = answer.get("last_id")
            if not isinstance(stream_at, int) or isinstance(stream_at, bool) or stream_at < 0:
                log.warning(
                    "the hub's watch answer has no stream position (%r); after a reconnect this "
                    "client will catch up on every event the hub kept",
                    stream_at,
                )
                stream_at = 0  # catch up on all the hub kept rather than lose anything
            self._floor = stream_at
            self._schedule_save()
        oldest = answer.get("oldest_id")
        gap = since is not None and isinstance(oldest, int) and since < oldest - 1
        replayed = answer.get("replayed") or 0
        message = f"live on {self.hub}, watching {', '.join(answer.get('watching') or []) or 'nothing'}"
        if since is not None:
            message += f" (caught up on {replayed} event{'s' if replayed != 1 else ''})"
        if gap:
            message += (
                f"; events {since + 1} to {oldest - 1} were pruned before this client caught up "
                f"(the hub keeps {answer.get('retention_days')} days)"
            )
        self._set_state(Phase.LIVE, message, watch=answer, gap=gap, since=since)

    def _start_keepalive(self, link: _Link, perspective: pb.RemoteReference) -> LoopingCall | None:
        if not self.keepalive:
            return None

        def ping() -> Deferred[Any] | None:
            if link.lost:
                return None
            d = perspective.callRemote("ping")
            d.addTimeout(self.keepalive_timeout, self.clock)
            d.addErrback(unanswered)
            return None

        def unanswered(failure: Failure) -> None:
            log.info("the hub did not answer a ping (%s); dropping the connection", failure.getErrorMessage())
            link.close(abort=True)

        call = LoopingCall(ping)
        call.clock = self.clock
        call.start(self.keepalive, now=False)
        return call

    # -- what the hub pushes ------------------------------------------------------------

    def _received_event(self, event: Any) -> None:
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, int):
            log.warning("ignoring a malformed event from the hub: %r", event)
            return
        if self._last_id is not None and event_id <= self._last_id:
            self.duplicates += 1
            return
        self._last_id = event_id
        self._schedule_save()
        self._notify("on_event", event)

    def _received_page(self, page: Any) -> None:
        try:
            events = json.loads(page) if isinstance(page, bytes | str) else None
        except ValueError:
            events = None
        if not isinstance(events, list):
            log.warning("ignoring a malformed page of events from the hub: %.200r", page)
            return
        for event in events:
            self._received_event(event)

    def _received_alert(self, alert: Any) -> None:
        alert_id = alert.get("alert_id") if isinstance(alert, dict) else None
        if not isinstance(alert_id, int):
            log.warning("ignoring a malformed alert from the hub: %r", alert)
            return
        if alert_id in self._alerts_seen:  # the hub sends pending alerts again on every login
            return
        self._alerts_seen.add(alert_id)
        self._notify("on_alert", alert)

    def _received_goodbye(self, link: _Link, reason: str) -> None:
        link.goodbye = reason
        self._notify("on_goodbye", reason)
        if reason == SIGNED_IN_ELSEWHERE:
            self._end(
                Outcome(
                    Ending.SIGNED_IN_ELSEWHERE,
                    f"{self.user or 'this client'} signed in elsewhere; this client stopped "
                    "(the other one keeps the session)",
                )
            )
        # otherwise ("too slow", ...) the hub closes the connection and we come back

    def _lost_access(self, projects: list[str], reason: str) -> None:
        """Watch the rest from now on: naming a project we may not see would
        make every reconnect's watch fail."""
        if self.projects is not None:
            self.projects = [p for p in self.projects if p not in projects]
            if not self.projects:
                self._end(
                    Outcome(Ending.REFUSED, f"no project left to watch: {', '.join(projects)}: {reason}")
                )
        self._notify("on_access_lost", projects, reason)

    def _notify(self, method: str, *args: Any) -> None:
        callback = getattr(self.listener, method, None)
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("the front end's %s failed", method)

    def _set_state(self, phase: Phase, message: str, **fields: Any) -> None:
        self.state = State(phase, message, self.hub, **fields)
        log.debug("%s: %s", phase, message)
        self._notify("on_state", self.state)

    # -- the resume file ----------------------------------------------------------------

    def _schedule_save(self) -> None:
        """Save at the end of this reactor turn: one write per burst of events."""
        if self.resume is not None and self._save_call is None:
            self._save_call = self.reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        if self._save_call is not None:
            if self._save_call.active():
                self._save_call.cancel()
            self._save_call = None
        position = self.position
        if self.resume is None or position is None or position == self._saved_id:
            return
        try:
            self.resume.save(position, hub=",".join(self.hubs), user=self.user, projects=self.projects)
            self._saved_id = position
        except OSError as e:
            log.warning("could not save the resume position to %s: %s", self.resume.path, e)


async def _refusable(d: Deferred[Any]) -> Any:
    """Await ``d``; a refusal of the hub's becomes _Refused."""
    try:
        return await d
    except pb.RemoteError as e:
        if raised_remotely(e, *_REFUSALS):
            raise _Refused(str(e)) from None
        raise


def describe(e: BaseException) -> str:
    """A connection or hub error, in a few words for the user."""
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, error.TimeoutError | defer.TimeoutError):
        return "timed out"
    if isinstance(e, pb.PBConnectionLost | error.ConnectionLost | error.ConnectionDone):
        return "connection lost"
    if isinstance(e, error.DNSLookupError):
        return "host not found"
    if isinstance(e, pb.RemoteError):
        return f"the hub answered: {e}"
    text = str(e)
    return text or type(e).__name__


def _seconds(delay: float) -> str:
    return f"{delay:.0f} s" if delay >= 10 else f"{delay:.1f} s"
