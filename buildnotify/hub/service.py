"""The PB service: portal, realm, project rooms, developer perspectives and
the fan-out of committed events to them.

The realm is where the four client patterns are decided:

- no mind                      -> :class:`ClientlessSession` (queries only)
- anonymous with a mind        -> a fresh :class:`AnonymousSession`
- developer with a mind        -> :class:`DeveloperSession`, the single client
                                  of that developer's :class:`DeveloperPerspective`
- every observer of a project  -> the shared :class:`ProjectRoom`
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select
from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.spread import pb
from zope.interface import implementer

from buildnotify.alerts import Alert
from buildnotify.bus import Bus, Message
from buildnotify.events import BuildEvent
from buildnotify.hub.access import AccessWatch
from buildnotify.hub.auth import Client, LoginRoot, LoginThrottle, TokenChecker
from buildnotify.hub.connection import ConnectionGuard, HubConnection
from buildnotify.hub.outbox import Flusher
from buildnotify.hub.rooms import ProjectRoom, claim_wire
from buildnotify.hub.sessions import (
    AnonymousSession,
    ClientlessSession,
    Developer,
    DeveloperSession,
    ObserverSession,
    Session,
)
from buildnotify.hub.settings import PBSettings
from buildnotify.hub.wire import OneWayCall
from buildnotify.metrics import Metrics
from buildnotify.protocol import LoginFailed
from buildnotify.store import Store, accounts, personal, presence
from buildnotify.store.accounts import AccessChange
from buildnotify.store.schema import claims

log = logging.getLogger("buildnotify.pb")
#: the kinds of session (Session.kind), each reported even when none is attached
SESSION_KINDS = (ClientlessSession.kind, AnonymousSession.kind, DeveloperSession.kind)
#: seconds a login elsewhere waits beyond the ping timeout for the node
#: holding the client to answer (it pings first, then sends through the bus)
PROBE_SLACK = 2.0


class DeveloperPerspective:
    """One per developer: at most one attached client, which gets the
    developer's personal alerts. A second login follows the policy, on this
    node and (through the bus) on every other node of the hub."""

    def __init__(self, service: PBService, developer: Developer) -> None:
        self.service = service
        self.developer = developer
        self.client: DeveloperSession | None = None
        self._attaching = DeferredLock()

    def attach(self, new: DeveloperSession) -> Deferred[None]:
        """One login at a time: two logins racing a dead client's ping must
        not both become the client."""
        return self._attaching.run(lambda: Deferred.fromCoroutine(self._attach(new)))

    async def _attach(self, new: DeveloperSession) -> None:
        service, settings = self.service, self.service.settings
        old = self.client
        if old is not None and old.ended is None:
            if settings.login_policy == "refuse-new":
                if await old.ping(settings.ping_timeout):
                    raise self._refused()
                service.evict(old, "unresponsive", "did not answer a ping; a new login took its place")
            else:
                self.replace(old)
        if service.shared and settings.login_policy == "refuse-new":
            holder = await service.store.read(presence.holder, developer=self.developer.name)
            # a client held on another node (this node knows its own) that answers keeps its place
            if (
                holder is not None
                and holder.node != service.bus.node
                and await service.probe(self.developer.name)
            ):
                raise self._refused()
        self.client = new
        await self._announce(new)
        await new.send_pending_alerts()

    async def _announce(self, new: DeveloperSession) -> None:
        """Say on the bus that ``new`` is the developer's client: an older
        client on any node says goodbye (on this node it has already)."""
        service, name = self.service, self.developer.name
        if service.shared:
            await service.store.write(lambda conn: presence.hold(conn, name, service.bus.node, new.nonce))
        message = await service.bus.publish("attached", {"developer": name, "nonce": new.nonce})
        new.attached_as(message.id)

    def _refused(self) -> LoginFailed:
        return LoginFailed(
            f"{self.developer.name} is already signed in from another client "
            "(this hub refuses a second login; sign out there first)"
        )

    def replace(self, old: DeveloperSession) -> None:
        """``old`` was replaced by a newer login: goodbye now, dropped after the grace period."""
        if old.replaced:
            return
        old.replaced = True
        if self.client is old:
            self.client = None  # it lingers for the grace period, but alerts go to the new one
        old.goodbye("signed in elsewhere")
        self.service.metrics.evictions.labels(reason="replaced").inc()
        self.service.later(self.service.settings.grace, self.service.drop, old, "replaced by a newer session")

    def alert(self, alert: Alert) -> None:
        if self.client is not None and self.client.ended is None:
            self.client.deliver_alert(alert)

    def detached(self, session: DeveloperSession) -> None:
        if self.client is session:
            self.client = None
            if self.service.shared:
                name, nonce = self.developer.name, session.nonce
                d = self.service.store.write(lambda conn: presence.release(conn, name, nonce))
                d.addErrback(
                    lambda f: log.warning("could not record %s's sign-out: %s", name, f.getErrorMessage())
                )


@implementer(IRealm)
class Realm:
    def __init__(self, service: PBService) -> None:
        self.service = service

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Deferred:  # noqa: N802
        """``mind`` is the :class:`~buildnotify.hub.auth.Client` the login
        gate passes: the connection, and the client's mind or None."""
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("buildnotify only hands out PB perspectives")
        return Deferred.fromCoroutine(self._avatar(avatar_id, mind))

    async def _avatar(self, avatar_id: Any, client: Client) -> tuple[Any, Session, Any]:
        service = self.service
        developer = None if avatar_id is ANONYMOUS else Developer(*avatar_id)
        if client.mind is None:
            session: Session = ClientlessSession(service, developer, client.connection)
        elif developer is None:
            session = AnonymousSession(service, client.mind)
        else:
            session = DeveloperSession(service, developer, client.mind)
        service.track(session)
        if isinstance(session, ObserverSession):
            try:
                await service.load_mutes(session)
                if isinstance(session, DeveloperSession):
                    await service.developer(session.developer).attach(session)
                session.require_running()  # the connection may have gone meanwhile
            except BaseException:
                session.end("login refused")  # untrack it: no session, no pings
                raise
        log.info("%s session for %s", session.kind, developer.name if developer else "anonymous")
        return pb.IPerspective, session, session.logout


class PBService:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        settings: PBSettings,
        reactor: Any,
        clock: Any = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``clock`` (default: the reactor) runs every timeout, grace period,
        heartbeat and throttle window: tests pass a ``task.Clock``. Every
        state change pushed to clients comes from ``bus``. ``metrics``
        counts deliveries and evictions and is told the attached sessions."""
        self.store = store
        self.metrics = metrics or Metrics()
        self.metrics.count_sessions(self.session_counts)
        self.bus = bus
        self.shared = store.shared  # several nodes may share the database
        self.settings = settings
        self.reactor = reactor
        self.clock = clock or reactor
        self.flusher = Flusher(reactor)
        self.log = log
        self.rooms: dict[str, ProjectRoom] = {}
        self.developers: dict[str, DeveloperPerspective] = {}
        self.connections: set[HubConnection] = set()
        self._per_address: dict[str, int] = {}
        self._refused_addresses: set[str] = set()  # told once in the log, until they drop below
        self.mutes: dict[str, dict[str, datetime]] = {}  # developer -> project -> until
        self.throttle = LoginThrottle(self.clock, settings.login_failures, settings.login_window)
        checkers: list[Any] = [TokenChecker(store)]
        if settings.anonymous:
            checkers.append(AllowAnonymousAccess())
        self.portal = Portal(Realm(self), checkers)
        self._probes: dict[str, Deferred[bool]] = {}  # our questions to other nodes: is X's client alive?
        self._unsubscribe = [
            bus.subscribe_events(self.committed),
            bus.subscribe("claim", self._claim_changed),
            bus.subscribe("mute", self._mute_changed),
            bus.subscribe("access", lambda _: self.access.poll()),
            bus.subscribe("attached", self._attached),
            bus.subscribe("probe", self._probed),
            bus.subscribe("present", self._present),
        ]
        self._heartbeat = LoopingCall(self._ping_everyone)
        self._heartbeat.clock = self.clock
        self.access = AccessWatch(store, self.clock, settings.access_poll, self.access_changed)
        self._timers: set[Any] = set()  # pending drops and aborts (later()), cancelled by stop()

    async def start(self) -> None:
        if self.shared:  # clients this node held before it restarted are gone
            await self.store.write(lambda conn: presence.forget_node(conn, self.bus.node))
        for claim in await self.store.read(_all_claims):
            self.room(claim["project"]).claims[(claim["pipeline"], claim["branch"] or "")] = claim
        self._heartbeat.start(self.settings.heartbeat, now=False)
        await self.access.start()

    @property
    def access_version(self) -> int:
        """The newest access change applied to the sessions: a watch that saw
        it move while it waited checks what it joined again."""
        return self.access.last_id

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.access.stop()
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in list(self._timers):
            call.cancel()
        self._timers.clear()
        for session in self.sessions:
            self.drop(session, "the hub is shutting down")
        self.flusher.flush()

    def factory(self, proxied: bool = False) -> ConnectionGuard:
        """The factory to listen with: PB behind a guard per connection.
        ``proxied``: the listener reads the PROXY protocol (``haproxy:``)."""
        return ConnectionGuard(self, LoginRoot(self), proxied)

    # -- the bus ---------------------------------------------------------------------

    def committed(self, events: Sequence[BuildEvent], alerts: Sequence[Alert]) -> None:
        """Push each committed event to its project's observers (encoded once)
        and each alert to its developer's client."""
        for event in events:
            room = self.rooms.get(event.project)
            if room is not None and (room.observers or room.claims):
                self.metrics.deliveries.inc(len(room.observers))
                room.publish(event, OneWayCall("event", event.to_dict()) if room.observers else None)
        for alert in alerts:
            perspective = self.developers.get(alert.developer)
            if perspective is not None:
                perspective.alert(alert)

    def _claim_changed(self, message: Message) -> None:
        """A claim made or released on any node: tell this node's observers."""
        claim = dict(message.body)
        state = claim.pop("state")
        if state == "claimed":
            self.room(claim["project"]).set_claim(claim)
        elif state == "released":
            room = self.rooms.get(claim["project"])
            if room is not None:
                room.release_claim(claim["pipeline"], claim["branch"])

    def _mute_changed(self, message: Message) -> None:
        body = message.body
        until = datetime.fromisoformat(body["until"]) if body["until"] else None
        self.muted(body["developer"], body["project"], until)

    # -- one client per developer, across nodes --------------------------------------

    def _attached(self, message: Message) -> None:
        """A developer's client attached on some node: an older client of
        that developer here says goodbye (bus order decides which is older)."""
        perspective = self.developers.get(message.body["developer"])
        client = perspective.client if perspective is not None else None
        if (
            client is not None
            and client.ended is None
            and client.nonce != message.body["nonce"]
            and client.outranked_by(message.id)
        ):
            perspective.replace(client)  # type: ignore[union-attr]

    async def probe(self, developer: str) -> bool:
        """Ask the other nodes whether ``developer``'s client there answers
        a ping; False when no node says so in time (a dead node says nothing)."""
        question = secrets.token_hex(8)
        answer: Deferred[bool] = Deferred()
        self._probes[question] = answer
        answer.addTimeout(self.settings.ping_timeout + PROBE_SLACK, self.clock, lambda *_: False)
        try:
            await self.bus.publish("probe", {"developer": developer, "probe": question})
            return await answer
        finally:
            self._probes.pop(question, None)

    def _probed(self, message: Message) -> None:
        perspective = self.developers.get(message.body["developer"])
        client = perspective.client if perspective is not None else None
        if message.node == self.bus.node or client is None or client.ended is not None:
            return

        def answer(alive: bool) -> None:
            if not alive:
                self.evict(client, "unresponsive", "did not answer a ping; a new login took its place")
            self.bus.publish("present", {"probe": message.body["probe"], "alive": alive}).addErrback(
                lambda f: log.warning("could not answer a login elsewhere: %s", f.getErrorMessage())
            )

        client.ping(self.settings.ping_timeout).addCallback(answer)

    def _present(self, message: Message) -> None:
        answer = self._probes.pop(message.body["probe"], None)
        if answer is not None and not answer.called:
            answer.callback(bool(message.body["alive"]))

    # -- registry --------------------------------------------------------------------

    def room(self, project: str) -> ProjectRoom:
        room = self.rooms.get(project)
        if room is None:
            room = self.rooms[project] = ProjectRoom(project)
        return room

    def leave(self, project: str, session: ObserverSession) -> None:
        """Detach ``session`` from a room, and forget the room once nobody
        watches it and it holds no claim (any client may name projects)."""
        room = self.rooms.get(project)
        if room is not None:
            room.detach(session)
            if not room.observers and not room.claims:
                del self.rooms[project]

    def developer(self, developer: Developer) -> DeveloperPerspective:
        perspective = self.developers.get(developer.name)
        if perspective is None or perspective.developer.id != developer.id:
            perspective = self.developers[developer.name] = DeveloperPerspective(self, developer)
        return perspective

    def track(self, session: Session) -> None:
        session.connection.session_started(session)

    def session_ended(self, session: Session) -> None:
        session.connection.session_ended(session)
        if isinstance(session, DeveloperSession) and session.developer is not None:
            perspective = self.developers.get(session.developer.name)
            if perspective is not None:
                perspective.detached(session)

    # -- connections -----------------------------------------------------------------

    def admit(self, peer: str) -> bool:
        """Whether another connection from ``peer`` may open (counted if so)."""
        count = self._per_address.get(peer, 0)
        if count >= self.settings.connections_per_address:
            if peer not in self._refused_addresses:
                self._refused_addresses.add(peer)
                log.warning(
                    "refusing PB connections from %s: it has %d open (connections_per_address)", peer, count
                )
            return False
        self._per_address[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        left = self._per_address.get(peer, 0) - 1
        if left > 0:
            self._per_address[peer] = left
        else:
            self._per_address.pop(peer, None)
        if left < self.settings.connections_per_address:
            self._refused_addresses.discard(peer)

    @property
    def sessions(self) -> list[Session]:
        """Every session of every connection (for tests, metrics and shutdown)."""
        return [session for connection in self.connections for session in connection.sessions]

    def session_counts(self) -> dict[str, int]:
        """Attached sessions by kind (every kind, zero too), for the metrics."""
        counts = dict.fromkeys(SESSION_KINDS, 0)
        for session in self.sessions:
            counts[session.kind] = counts.get(session.kind, 0) + 1
        return counts

    def connected(self, connection: HubConnection) -> None:
        self.connections.add(connection)

    def disconnected(self, connection: HubConnection) -> None:
        self.connections.discard(connection)
        for session in list(connection.sessions):
            session.end("disconnected")

    # -- access taken away ----------------------------------------------------------

    def access_changed(self, changes: Sequence[AccessChange]) -> None:
        """Apply access changes made anywhere: the sessions of a removed
        developer or of a replaced token end; a project a session may no
        longer see stops reaching it."""
        developers = {c.subject for c in changes if c.kind == "developer"}
        projects = {c.subject for c in changes if c.kind == "project"}
        d = Deferred.fromCoroutine(self._apply_access(developers, projects))
        d.addErrback(lambda f: log.error("applying access changes failed: %s", f.getErrorMessage()))

    async def _apply_access(self, developers: set[str], projects: set[str]) -> None:
        if developers:
            current = await self.store.read(accounts.signed_in_as, names=developers)
            for session in self.sessions:
                who = session.developer
                if (
                    who is not None
                    and who.name in developers
                    and current.get(who.name) != (who.id, who.token_hash)
                ):
                    self.dismiss(
                        session, "your sign-in is no longer valid: token replaced or account removed"
                    )
        watching = [s for s in self.sessions if isinstance(s, ObserverSession) and s.watching & projects]
        hidden: dict[int | None, set[str]] = {}
        for session in watching:
            if session.developer_id not in hidden:
                hidden[session.developer_id] = await self.store.read(
                    accounts.hidden_from, developer_id=session.developer_id
                )
            lost = projects & hidden[session.developer_id]
            if lost and session.ended is None:
                session.lose_sight(lost)

    def dismiss(self, session: Session, reason: str) -> None:
        """Say goodbye (to a session with a mind), end the session, and close
        its connection once that is sent if no other session uses it."""
        if session.ended is not None:
            return
        log.info("ending %s session of %s: %s", session.kind, session.who, reason)
        if isinstance(session, ObserverSession):
            session.goodbye(reason)
        session.end(reason)
        if not session.connection.sessions:
            session.connection.finish()

    # -- dropping clients ------------------------------------------------------------

    def later(self, delay: float, f: Any, *args: Any) -> Any:
        """``clock.callLater``, but cancelled when the service stops."""

        def run() -> None:
            self._timers.discard(call)
            f(*args)

        call = self.clock.callLater(delay, run)
        self._timers.add(call)
        return call

    def drop(self, session: Session, reason: str) -> None:
        """Detach ``session`` whatever its client does; close its connection
        only if no other session uses it."""
        if session.ended is not None:
            return
        log.info("dropping %s session of %s: %s", session.kind, session.who, reason)
        session.end(reason)
        if not session.connection.sessions:
            session.connection.abort()

    def evict(self, session: Session, kind: str, reason: str) -> None:
        """:meth:`drop`, counted as an eviction of ``kind`` (metrics.EVICTIONS)."""
        if session.ended is None:
            self.metrics.evictions.labels(reason=kind).inc()
        self.drop(session, reason)

    def too_slow(self, connection: HubConnection) -> None:
        """A client stopped reading: drop its sessions, put goodbye("too
        slow") behind what its socket already holds, and close our side; if
        it never reads even that, abort after the grace period."""
        observers = [s for s in connection.sessions if isinstance(s, ObserverSession)]
        self.metrics.evictions.labels(reason="too_slow").inc(len(connection.sessions))
        self._end_all(connection, "too slow")
        goodbye = OneWayCall("goodbye", "too slow")
        connection.close_after([goodbye.for_object(session.mind.luid) for session in observers])

    def _ping_everyone(self) -> None:
        for connection in list(self.connections):
            session = next((s for s in connection.sessions if isinstance(s, ObserverSession)), None)
            if session is None or connection.pinging:
                continue  # one ping at a time per connection, however long it takes
            connection.pinging = True
            session.ping(self.settings.ping_timeout).addCallback(self._pinged, connection)

    def _pinged(self, alive: bool, connection: HubConnection) -> None:
        connection.pinging = False
        if alive or connection not in self.connections:
            return
        self.metrics.evictions.labels(reason="no_heartbeat").inc(len(connection.sessions))
        self._end_all(connection, "no heartbeat")
        connection.abort()

    def _end_all(self, connection: HubConnection, reason: str) -> None:
        for session in list(connection.sessions):
            log.info("dropping %s session of %s: %s", session.kind, session.who, reason)
            session.end(reason)

    # -- mutes -----------------------------------------------------------------------

    def now(self) -> datetime:
        """The service clock's time, as an aware UTC datetime: mutes run out on
        the same clock as every other timeout (the reactor's is the wall clock)."""
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    async def load_mutes(self, session: ObserverSession) -> None:
        if session.developer is None:
            return
        saved = await self.store.read(personal.settings, developer_id=session.developer.id)
        self.mutes[session.developer.name] = {
            p: s["muted_until"] for p, s in saved.items() if s["muted_until"]
        }

    async def mute(self, developer: Developer, project: str, until: datetime | None) -> None:
        """Store a mute (None: unmute) and apply it here and on every node
        through the bus, its message committed with it (bus order is store order)."""
        body = {
            "developer": developer.name,
            "project": project,
            "until": until.isoformat() if until else None,
        }

        def operation(conn: Connection) -> tuple[None, dict[str, Any]]:
            personal.set_muted(conn, developer.id, project, until)
            return None, body

        await self.bus.write_and_publish("mute", operation)
        self.muted(developer.name, project, until)

    def change_claim(
        self, change: Callable[[Connection], dict[str, Any] | None], state: str
    ) -> Deferred[dict[str, Any] | None]:
        """Store a claim change: ``change`` returns the claim it made
        ("claimed") or released ("released"), or None if nothing changed.
        Every node's observers (this one's through the bus too) are told in
        the same transaction, so every node sees claims in the order stored.
        Fires with the claim."""

        def operation(conn: Connection) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            claim = change(conn)
            return claim, None if claim is None else claim_wire(claim) | {"state": state}

        return self.bus.write_and_publish("claim", operation)

    def muted(self, developer: str, project: str, until: datetime | None) -> None:
        """Apply a mute to the developer's sessions here. Only a developer whose
        mutes this node loaded (an observer session here, load_mutes) is kept:
        every node hears every mute on the bus, and a later login reads them
        from the store."""
        mine = self.mutes.get(developer)
        if mine is None:
            return
        if until is None:
            mine.pop(project, None)
        else:
            mine[project] = until

    def is_muted(self, session: ObserverSession, project: str) -> bool:
        if session.developer is None:
            return False
        until = self.mutes.get(session.developer.name, {}).get(project)
        return until is not None and until > self.now()


def _all_claims(conn: Any) -> list[dict[str, Any]]:
    projects = conn.execute(select(claims.c.project).distinct()).scalars().all()
    return personal.claims_for(conn, projects)
