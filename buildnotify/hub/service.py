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
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from twisted.cred.checkers import ANONYMOUS, AllowAnonymousAccess
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.task import LoopingCall
from twisted.spread import pb
from zope.interface import implementer

from buildnotify.config import PBSettings
from buildnotify.events import BuildEvent, utcnow
from buildnotify.hub.auth import LoginFailed, LoginRoot, LoginThrottle, TokenChecker
from buildnotify.hub.outbox import Flusher, Outbox
from buildnotify.hub.rooms import ProjectRoom
from buildnotify.hub.sessions import (
    AnonymousSession,
    ClientlessSession,
    Developer,
    DeveloperSession,
    ObserverSession,
    Session,
)
from buildnotify.hub.wire import SECURITY, OneWayCall
from buildnotify.store import Store, personal
from buildnotify.store.record import Alert
from buildnotify.store.schema import claims

log = logging.getLogger("buildnotify.pb")


class DeveloperPerspective:
    """One per developer: at most one attached client, which gets the
    developer's personal alerts. A second login follows the policy."""

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
        old = self.client
        if old is not None and old.ended is None:
            settings = self.service.settings
            if settings.login_policy == "refuse-new":
                if await old.ping(settings.ping_timeout):
                    raise LoginFailed(
                        f"{self.developer.name} is already signed in from another client "
                        "(this hub refuses a second login; sign out there first)"
                    )
                self.service.drop(old, "did not answer a ping; a new login took its place")
            else:
                old.goodbye("signed in elsewhere")
                self.service.later(settings.grace, self.service.drop, old, "replaced by a newer session")
        self.client = new
        await new.send_pending_alerts()

    def alert(self, alert: Alert) -> None:
        if self.client is not None and self.client.ended is None:
            self.client.deliver_alert(alert)

    def detached(self, session: DeveloperSession) -> None:
        if self.client is session:
            self.client = None


@implementer(IRealm)
class Realm:
    def __init__(self, service: PBService) -> None:
        self.service = service

    def requestAvatar(self, avatar_id: Any, mind: Any, *interfaces: Any) -> Deferred:  # noqa: N802
        if pb.IPerspective not in interfaces:
            raise NotImplementedError("buildnotify only hands out PB perspectives")
        return Deferred.fromCoroutine(self._avatar(avatar_id, mind))

    async def _avatar(self, avatar_id: Any, mind: Any) -> tuple[Any, Session, Any]:
        service = self.service
        developer = None if avatar_id is ANONYMOUS else Developer(*avatar_id)
        if mind is None:
            session: Session = ClientlessSession(service, developer)
        elif developer is None:
            session = AnonymousSession(service, mind)
        else:
            session = DeveloperSession(service, developer, mind)
        if isinstance(session, ObserverSession):
            service.track(session)
            try:
                await service.load_mutes(session)
                if isinstance(session, DeveloperSession):
                    await service.developer(session.developer).attach(session)
            except BaseException:
                session.end("login refused")  # untrack it: no session, no pings
                raise
        log.info("%s session for %s", session.kind, developer.name if developer else "anonymous")
        return pb.IPerspective, session, session.logout


class PBService:
    def __init__(self, store: Store, settings: PBSettings, reactor: Any) -> None:
        self.store = store
        self.settings = settings
        self.reactor = reactor
        self._flusher = Flusher(reactor)
        self.log = log
        self.rooms: dict[str, ProjectRoom] = {}
        self.developers: dict[str, DeveloperPerspective] = {}
        self.outboxes: dict[pb.Broker, Outbox] = {}
        self.sessions: dict[pb.Broker, set[ObserverSession]] = {}
        self.clientless: dict[pb.Broker, int] = {}  # mindless sessions per connection
        self._pinging: set[pb.Broker] = set()  # connections with a heartbeat ping out
        self.mutes: dict[str, dict[str, datetime]] = {}  # developer -> project -> until
        self.throttle = LoginThrottle(reactor, settings.login_failures, settings.login_window)
        checkers: list[Any] = [TokenChecker(store)]
        if settings.anonymous:
            checkers.append(AllowAnonymousAccess())
        self.portal = Portal(Realm(self), checkers)
        self._unsubscribe = store.subscribe(self.committed)
        self._heartbeat = LoopingCall(self._ping_everyone)
        self._heartbeat.clock = reactor
        self._timers: set[Any] = set()  # pending drops and aborts, cancelled by stop()

    async def start(self) -> None:
        for claim in await self.store.read(_all_claims):
            self.room(claim["project"]).claims[(claim["pipeline"], claim["branch"] or "")] = claim
        self._heartbeat.start(self.settings.heartbeat, now=False)

    def stop(self) -> None:
        self._unsubscribe()
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in list(self._timers):
            call.cancel()
        self._timers.clear()
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                self.drop(session, "the hub is shutting down")
        self._flusher.flush()

    def factory(self) -> pb.PBServerFactory:
        return pb.PBServerFactory(LoginRoot(self), security=SECURITY)

    # -- the bus ---------------------------------------------------------------------

    def committed(self, events: Sequence[BuildEvent], alerts: Sequence[Alert]) -> None:
        """Push each committed event to its project's observers (encoded once)
        and each alert to its developer's client."""
        for event in events:
            room = self.rooms.get(event.project)
            if room is not None and (room.observers or room.claims):
                room.publish(event, OneWayCall("event", event.to_dict()) if room.observers else None)
        for alert in alerts:
            perspective = self.developers.get(alert.developer)
            if perspective is not None:
                perspective.alert(alert)

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

    def outbox_for(self, broker: pb.Broker) -> Outbox:
        outbox = self.outboxes.get(broker)
        if outbox is None:
            outbox = self.outboxes[broker] = Outbox(
                broker, self.settings.queue_limit, self._too_slow, self._flusher
            )
            broker.notifyOnDisconnect(lambda: self._disconnected(broker))
        return outbox

    def track(self, session: ObserverSession) -> None:
        self.sessions.setdefault(session.broker, set()).add(session)

    def session_ended(self, session: ObserverSession) -> None:
        on_broker = self.sessions.get(session.broker)
        if on_broker is not None:
            on_broker.discard(session)
        if isinstance(session, DeveloperSession) and session.developer is not None:
            perspective = self.developers.get(session.developer.name)
            if perspective is not None:
                perspective.detached(session)

    # -- dropping clients ------------------------------------------------------------

    def later(self, delay: float, f: Any, *args: Any) -> None:
        """``reactor.callLater``, but cancelled when the service stops."""

        def run() -> None:
            self._timers.discard(call)
            f(*args)

        call = self.reactor.callLater(delay, run)
        self._timers.add(call)

    def drop(self, session: ObserverSession, reason: str) -> None:
        """Detach ``session`` whatever its client does; close its connection
        only if no other session uses it."""
        if session.ended is not None:
            return
        log.info("dropping %s session of %s: %s", session.kind, _who(session), reason)
        session.end(reason)
        if not self.sessions.get(session.broker) and not self.clientless.get(session.broker):
            self._close(session.broker)

    def clientless_login(self, broker: pb.Broker, session: Session) -> None:
        """Count a mindless session on ``broker``, so that dropping another
        session never closes a connection it still uses."""
        self.clientless[broker] = self.clientless.get(broker, 0) + 1

        def gone() -> None:
            left = self.clientless.get(broker, 0) - 1
            if left > 0:
                self.clientless[broker] = left
            else:
                self.clientless.pop(broker, None)

        session.on_end = gone

    def _too_slow(self, outbox: Outbox) -> None:
        """A client stopped reading: drop its sessions, put goodbye("too
        slow") behind what its connection already holds, and close it; if it
        never reads even that, abort after the grace period."""
        broker = outbox.broker
        sessions = list(self.sessions.get(broker, ()))
        for session in sessions:
            log.info("dropping %s session of %s: too slow", session.kind, _who(session))
            session.end("too slow")
        self.outboxes.pop(broker, None)
        outbox.close()
        goodbye = OneWayCall("goodbye", "too slow")
        transport = broker.transport
        for session in sessions:
            transport.write(goodbye.for_object(session.mind.luid))
        transport.loseConnection()
        self.later(self.settings.grace, _abort, transport)

    def _close(self, broker: pb.Broker) -> None:
        outbox = self.outboxes.pop(broker, None)
        if outbox is not None:
            outbox.close()
        transport = broker.transport
        if transport is not None:
            (getattr(transport, "abortConnection", None) or transport.loseConnection)()

    def _disconnected(self, broker: pb.Broker) -> None:
        outbox = self.outboxes.pop(broker, None)
        if outbox is not None:
            outbox.close()
        for session in list(self.sessions.pop(broker, ())):
            session.end("disconnected")

    def _ping_everyone(self) -> None:
        for broker, sessions in list(self.sessions.items()):
            session = next(iter(sessions), None)
            if session is None or broker in self._pinging:
                continue  # one ping at a time per connection, however long it takes
            self._pinging.add(broker)
            d = session.ping(self.settings.ping_timeout)
            d.addBoth(lambda result, b=broker: (self._pinging.discard(b), result)[1])
            d.addCallback(self._pinged, broker)

    def _pinged(self, alive: bool, broker: pb.Broker) -> None:
        if alive or broker not in self.sessions:
            return
        for session in list(self.sessions.get(broker, ())):
            log.info("dropping %s session of %s: no heartbeat", session.kind, _who(session))
            session.end("no heartbeat")
        self._close(broker)

    # -- mutes -----------------------------------------------------------------------

    async def load_mutes(self, session: ObserverSession) -> None:
        if session.developer is None:
            return
        saved = await self.store.read(personal.settings, developer_id=session.developer.id)
        self.mutes[session.developer.name] = {
            p: s["muted_until"] for p, s in saved.items() if s["muted_until"]
        }

    def muted(self, developer: str, project: str, until: datetime | None) -> None:
        mine = self.mutes.setdefault(developer, {})
        if until is None:
            mine.pop(project, None)
        else:
            mine[project] = until

    def is_muted(self, session: ObserverSession, project: str) -> bool:
        if session.developer is None:
            return False
        until = self.mutes.get(session.developer.name, {}).get(project)
        return until is not None and until > utcnow()


def _abort(transport: Any) -> None:
    if getattr(transport, "connected", False):
        transport.abortConnection()


def _all_claims(conn: Any) -> list[dict[str, Any]]:
    projects = conn.execute(select(claims.c.project).distinct()).scalars().all()
    return personal.claims_for(conn, projects)


def _who(session: Session) -> str:
    return session.developer.name if session.developer else "anonymous"
