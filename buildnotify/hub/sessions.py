"""The perspectives a login gets (see docs/protocol.md for the wire view).

- :class:`ClientlessSession`: logged in without a mind; answers queries (and,
  for a developer, claims, acks and settings) and never calls the client.
- :class:`AnonymousSession`: a disposable perspective per anonymous login;
  watches public projects; its filters die with it; changes nothing.
- :class:`DeveloperSession`: the single client of a developer's perspective;
  watches, claims, gets personal alerts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.python.failure import Failure
from twisted.spread import pb

from buildnotify.alerts import Alert
from buildnotify.events import BuildEvent, utcnow
from buildnotify.hub import arguments
from buildnotify.hub.rooms import claim_wire
from buildnotify.hub.wire import OneWayCall, approx_size, call_head
from buildnotify.protocol import NotAllowed, SessionEnded
from buildnotify.store import accounts, personal, queries

if TYPE_CHECKING:
    from buildnotify.bus import Bus
    from buildnotify.hub.connection import HubConnection
    from buildnotify.hub.rooms import ProjectRoom
    from buildnotify.hub.settings import PBSettings
    from buildnotify.store import Store

log = logging.getLogger(__name__)

#: how many missed events are read from the store at a time during catch-up
CATCH_UP_PAGE = 500
#: seconds a client has to take a catch-up page before it is too slow
PAGE_TIMEOUT = 60.0
#: what a client without ``events`` (an older one) answers a page with
_NO_SUCH_METHOD = "twisted.spread.flavors.NoSuchMethod"
#: the most events one history answer holds ...
MAX_HISTORY = 1000
#: ... and about how many bytes one history answer or catch-up page holds
ANSWER_BYTES = 256 * 1024
#: the most pending alerts pushed on login or listed by alerts()
MAX_ALERTS = 1000
FOREVER = datetime(9999, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass(frozen=True)
class Developer:
    id: int
    name: str
    token_hash: str = ""  # of the token the session signed in with: a new one ends the session


class SessionHost(Protocol):
    """What a session needs of the service that holds it (hub/service.py):
    sessions sit below the service and know it only through this."""

    store: Store
    bus: Bus
    settings: PBSettings
    clock: Any

    @property
    def access_version(self) -> int: ...

    def now(self) -> datetime: ...

    def room(self, project: str) -> ProjectRoom: ...

    def leave(self, project: str, session: ObserverSession) -> None: ...

    def developer(self, developer: Developer) -> Any: ...

    def session_ended(self, session: Session) -> None: ...

    def drop(self, session: Session, reason: str) -> None: ...

    def too_slow(self, connection: HubConnection) -> None: ...

    def is_muted(self, session: ObserverSession, project: str) -> bool: ...

    async def mute(self, developer: Developer, project: str, until: datetime | None) -> None: ...

    def change_claim(
        self, change: Callable[[Any], dict[str, Any] | None], state: str
    ) -> Deferred[dict[str, Any] | None]: ...


class Session(pb.Avatar):
    """What every session answers: identity, liveness, history and status."""

    kind = "clientless"

    def __init__(self, service: SessionHost, developer: Developer | None, connection: HubConnection) -> None:
        self.service = service
        self.developer = developer
        self.connection = connection
        self.ended: str | None = None

    # -- plumbing ----------------------------------------------------------------

    def perspectiveMessageReceived(self, broker: pb.Broker, message: str, args: Any, kw: Any) -> Any:  # noqa: N802
        """PB's dispatch, counted against the connection's calls in flight."""
        return self.connection.answer(message, lambda: self._dispatch(broker, message, args, kw))

    def _dispatch(self, broker: pb.Broker, message: str, args: Any, kw: Any) -> Any:
        """PB's dispatch, plus: a clear error from an ended session, for an
        unknown method or for arguments that do not fit it, and ``async def``
        methods answered when they finish."""
        self.require_running()
        self.touched()
        method = getattr(self, f"perspective_{message}", None)
        if method is None:
            raise NotAllowed(f"no method {message!r} on a {self.kind} session")
        return arguments.call(broker, method, message, args, kw, self)

    def touched(self) -> None:
        """The client called: a hook for idle timeouts."""

    def logout(self) -> None:
        """Called when the client disconnects or drops its reference."""
        self.end("logged out")

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self.service.session_ended(self)

    @property
    def who(self) -> str:
        """The developer's name, or "anonymous" (for log lines)."""
        return self.developer.name if self.developer else "anonymous"

    @property
    def developer_id(self) -> int | None:
        return self.developer.id if self.developer else None

    def require_running(self) -> None:
        """Raise SessionEnded once the session has ended (after every await
        of a call that changes what the session holds)."""
        if self.ended is not None:
            raise SessionEnded(f"this session has ended: {self.ended}")

    def _require_developer(self, action: str) -> Developer:
        if self.developer is None:
            raise NotAllowed(f"anonymous sessions cannot {action}")
        return self.developer

    async def _hidden_projects(self) -> set[str]:
        """Private projects this session may not see."""
        return await self.service.store.read(accounts.hidden_from, developer_id=self.developer_id)

    async def _require_visible(self, projects: list[str]) -> list[str]:
        hidden = await self._hidden_projects()
        refused = [p for p in projects if p in hidden]
        if refused:
            raise NotAllowed(f"no such project, or it is private: {', '.join(refused)}")
        return projects

    async def _saved_visible(self) -> tuple[list[str], list[str]]:
        """A developer's saved projects it may still see, and those it no
        longer may (made private, or it left their members): skipped, not fatal."""
        saved = await self._saved_projects()
        hidden = await self._hidden_projects()
        return [p for p in saved if p not in hidden], [p for p in saved if p in hidden]

    # -- queries -----------------------------------------------------------------

    def perspective_ping(self) -> str:
        return "pong"

    def perspective_whoami(self) -> dict[str, Any]:
        return {
            "developer": self.developer.name if self.developer else None,
            "kind": self.kind,
            "retention_days": self.service.settings.retention_days,
        }

    async def perspective_projects(self) -> list[dict[str, Any]]:
        """Every project this session may see, with builds or not."""
        found = await self.service.store.read(accounts.visible_projects, developer_id=self.developer_id)
        return [{"project": name, "private": private} for name, private in found]

    async def perspective_history(
        self, project: str | None = None, limit: int = 50, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Events newest first: at most ``limit`` and about ANSWER_BYTES;
        ``before`` (an event id) pages back from there."""
        project = arguments.optional_text(project, "project")
        limit = arguments.integer(limit, "limit", low=1, high=MAX_HISTORY)
        before = arguments.optional_integer(before, "before", low=1)
        if project is not None:
            await self._require_visible([project])
        hidden = await self._hidden_projects()
        return await self.service.store.read(
            _event_page, project=project, limit=limit, before_id=before, exclude=hidden
        )

    async def perspective_status(self, projects: list[str] | None = None) -> list[dict[str, Any]]:
        """The newest finished build of every (pipeline, branch) of
        ``projects`` (default: the developer's watched projects it may still
        see), with claims."""
        if projects is None:
            projects, _ = await self._saved_visible()
        else:
            projects = await self._require_visible(arguments.project_list(projects))
        states = await self.service.store.read(personal.latest_states, projects=projects)
        claims = {
            (c["project"], c["pipeline"], c["branch"] or ""): c
            for c in await self.service.store.read(personal.claims_for, projects=projects)
        }
        out = []
        for event in states:
            row = event.to_dict()
            claim = claims.get((event.project, event.pipeline, event.branch or ""))
            row["claim"] = claim_wire(claim) if claim else None
            out.append(row)
        return out

    async def _saved_projects(self) -> list[str]:
        if self.developer is None:
            return []
        saved = await self.service.store.read(personal.settings, developer_id=self.developer.id)
        return sorted(p for p, s in saved.items() if s["watching"])

    # -- developer actions ---------------------------------------------------------

    async def perspective_claim(
        self, project: str, pipeline: str, branch: str | None = None, note: str | None = None
    ) -> dict[str, Any]:
        """ "I'm on it": claim a failing (project, pipeline, branch)."""
        developer = self._require_developer("claim builds")
        project, pipeline = arguments.text(project, "project"), arguments.text(pipeline, "pipeline")
        branch = arguments.optional_text(branch, "branch")
        note = arguments.optional_text(note, "note", limit=arguments.MAX_NOTE, note=True)
        await self._require_visible([project])
        states = await self.service.store.read(personal.latest_states, projects=[project])
        current = next(
            (e for e in states if e.pipeline == pipeline and (e.branch or "") == (branch or "")), None
        )
        if current is None or not current.status.red:
            raise NotAllowed(
                f"{project} {pipeline}@{branch or '-'} is not failing; only a broken build can be claimed"
            )

        def write(conn: Any) -> dict[str, Any]:
            claim = personal.claim(conn, project, pipeline, branch, developer.name, note, utcnow())
            claim.pop("replaced", None)
            return claim

        claim = await self.service.change_claim(write, "claimed")
        return claim_wire(claim)  # type: ignore[arg-type]

    async def perspective_unclaim(self, project: str, pipeline: str, branch: str | None = None) -> bool:
        developer = self._require_developer("release claims")
        project, pipeline = arguments.text(project, "project"), arguments.text(pipeline, "pipeline")
        branch = arguments.optional_text(branch, "branch")

        def write(conn: Any) -> dict[str, Any] | None:
            if not personal.unclaim(conn, project, pipeline, branch, developer.name):
                return None
            return {"project": project, "pipeline": pipeline, "branch": branch}

        return await self.service.change_claim(write, "released") is not None

    async def perspective_alerts(self) -> list[dict[str, Any]]:
        """Personal alerts not yet acknowledged, oldest first (at most
        MAX_ALERTS: acknowledge them to see later ones)."""
        developer = self._require_developer("have personal alerts")
        pending = await self.service.store.read(
            personal.pending_alerts, developer_id=developer.id, limit=MAX_ALERTS
        )
        return [alert_wire(alert_id, developer.name, event) for alert_id, event in pending]

    async def perspective_ack(self, alert_ids: list[int]) -> int:
        """Acknowledge alerts: they are not sent again. Returns how many."""
        developer = self._require_developer("acknowledge alerts")
        ids = arguments.id_list(alert_ids, "alert_ids")
        return await self.service.store.write(lambda conn: personal.ack_alerts(conn, developer.id, ids))

    async def perspective_mute(self, project: str, minutes: float | None = None) -> dict[str, Any]:
        """Stop pushing this project's events and alerts to me for ``minutes``
        (default: until unmuted). Alerts keep waiting, unacknowledged."""
        developer = self._require_developer("mute projects")
        project = arguments.text(project, "project")
        if minutes is not None:
            minutes = arguments.number(minutes, "minutes", low=0, high=arguments.MAX_MUTE_MINUTES)
        await self._require_visible([project])
        until = FOREVER if minutes is None else self.service.now() + timedelta(minutes=minutes)
        await self.service.mute(developer, project, until)
        return {"project": project, "muted_until": until.isoformat()}

    async def perspective_unmute(self, project: str) -> bool:
        developer = self._require_developer("unmute projects")
        project = arguments.text(project, "project")
        await self.service.mute(developer, project, None)
        return True

    async def perspective_settings(self) -> dict[str, Any]:
        developer = self._require_developer("have settings")
        saved = await self.service.store.read(personal.settings, developer_id=developer.id)
        return {
            project: {
                "watching": s["watching"],
                "muted_until": s["muted_until"].isoformat() if s["muted_until"] else None,
            }
            for project, s in saved.items()
        }

    def perspective_watch(self, projects: list[str] | None = None, since: int | None = None) -> Any:
        raise NotAllowed("a session without a client (mind) cannot watch; log in with a mind")


class ClientlessSession(Session):
    """Queries only; ended after ``idle_timeout`` seconds without a call (no
    heartbeat watches a session without a mind)."""

    kind = "clientless"

    def __init__(self, service: SessionHost, developer: Developer | None, connection: HubConnection) -> None:
        super().__init__(service, developer, connection)
        self._idle = service.clock.callLater(service.settings.idle_timeout, self._idled)

    def touched(self) -> None:
        if self._idle.active():
            self._idle.reset(self.service.settings.idle_timeout)

    def _idled(self) -> None:
        self.service.drop(self, f"idle for {self.service.settings.idle_timeout:g} s")

    def end(self, reason: str) -> None:
        if self._idle.active():
            self._idle.cancel()
        super().end(reason)


class ObserverSession(Session):
    """A session with a mind: it watches projects and is pushed their events."""

    kind = "observer"

    def __init__(self, service: SessionHost, developer: Developer | None, mind: pb.RemoteReference) -> None:
        super().__init__(service, developer, mind.broker.connection)
        self.mind = mind
        self.outbox = self.connection.outbox
        self._head = call_head(mind.luid)  # the same for every call to this mind
        self.watching: set[str] = set()
        self._backlog: list[tuple[BuildEvent, OneWayCall]] | None = None  # live events held during catch-up
        self._watch_lock = DeferredLock()
        #: the session's stream position: every event of its projects up to it
        #: has been pushed (or muted, or came before the session started watching)
        self._last_id = 0

    def deliver(self, call: OneWayCall) -> None:
        if self.ended is None:
            self.outbox.send(call.for_head(self._head))

    def deliver_event(self, event: BuildEvent, call: OneWayCall) -> None:
        if self._backlog is not None:
            self._backlog.append((event, call))
            return
        if event.id <= self._last_id:
            return  # a replay pushed it already: its announcement came after the commit was visible
        self._last_id = event.id
        if not self.service.is_muted(self, event.project):
            self.deliver(call)

    def goodbye(self, reason: str) -> None:
        self.deliver(OneWayCall("goodbye", reason))

    def lose_sight(self, projects: set[str]) -> None:
        """This session may no longer see ``projects``: stop pushing them and
        tell the client (``unwatched``)."""
        lost = sorted(projects & self.watching)
        self._leave(lost)
        if lost:
            log.info("%s session of %s no longer sees %s", self.kind, self.who, ", ".join(lost))
            self.deliver(OneWayCall("unwatched", lost, "no such project, or it is private"))

    def _leave(self, projects: Iterable[str]) -> None:
        """Stop watching ``projects`` (those it watches) and leave their rooms."""
        for project in projects:
            if project in self.watching:
                self.watching.discard(project)
                self.service.leave(project, self)

    def fail(self, reason: str) -> None:
        """Something went wrong on our side: end the session (and close its
        connection if nothing else uses it) so the client resumes afresh."""
        try:
            self.service.drop(self, reason)
        except Exception:
            log.exception("dropping a failed session failed too")

    def ping(self, timeout: float) -> Deferred[bool]:
        """Whether the client answers a ping within ``timeout`` seconds."""
        try:
            d = self.mind.callRemote("ping")
        except pb.DeadReferenceError:
            return succeed(False)
        d.addTimeout(timeout, self.service.clock)
        d.addCallbacks(lambda _: True, lambda _: False)
        return d

    def end(self, reason: str) -> None:
        if self.ended is not None:
            return
        super().end(reason)
        self._leave(list(self.watching))

    def perspective_watch(self, projects: list[str] | None = None, since: int | None = None) -> Deferred:
        """Watch ``projects`` (a developer's default: the saved ones). With
        ``since`` (the last event id the client saw), first replay every
        stored event of them after it, then go live: no gap, no duplicate."""
        return self._watch_lock.run(lambda: Deferred.fromCoroutine(self._watch(projects, since)))

    async def _watch(self, projects: list[str] | None, since: int | None) -> dict[str, Any]:
        since = arguments.optional_integer(since, "since")
        skipped: list[str] = []
        named = projects is not None
        access = self.service.access_version  # what the visibility check below has seen
        if projects is None:
            if self.developer is None:
                raise NotAllowed("anonymous sessions must name the projects to watch")
            projects, skipped = await self._saved_visible()
        else:
            projects = await self._require_visible(arguments.project_list(projects))
        self.require_running()
        if self.developer is not None:
            developer_id = self.developer.id

            def save(conn: Any) -> None:
                for project in projects:
                    personal.set_watching(conn, developer_id, project, True)

            await self.service.store.write(save)
            self.require_running()  # an ended session must not join rooms it never leaves
        joined = [p for p in projects if p not in self.watching]
        self._backlog = []  # subscribe first, so nothing committed from now on is missed
        for project in joined:
            self.service.room(project).attach(self)
            self.watching.add(project)
        head = self.service.bus.head  # every event up to here was announced before we joined
        replayed = 0
        try:
            if self.service.access_version != access:  # access changed while we looked
                lost = await self._hidden_projects() & set(joined)
                self._leave(lost)
                if lost and named:
                    raise NotAllowed(f"no such project, or it is private: {', '.join(sorted(lost))}")
                skipped += sorted(lost)
            if since is not None:
                replayed = await self._replay(since)
        except BaseException:
            self._leave(joined)  # no half-caught-up subscription: the client retries
            raise
        finally:
            held, self._backlog = self._backlog or [], None
        self._last_id = max(self._last_id, head)  # replayed, or before this watch began
        for event, call in held:
            if event.project in self.watching:
                self.deliver_event(event, call)
        oldest = await self.service.store.read(queries.oldest_id)
        self.require_running()
        # the answer follows the events it reports through the same outbox
        return {
            "watching": sorted(self.watching),
            "skipped": skipped,
            "replayed": replayed,
            "last_id": self._last_id,
            "oldest_id": oldest,
            "retention_days": self.service.settings.retention_days,
            "claims": [
                claim_wire(c) for p in sorted(self.watching) for c in self.service.room(p).claims.values()
            ],
        }

    async def _replay(self, since: int) -> int:
        """Send the stored events after ``since`` (or after what this session
        already pushed) in pages, one ``events`` call each, JSON encoded on a
        reader thread (jellying each event made a catch-up 20-40 times
        slower for hub and client: bench/replay.py).
        A page holds at most half the client's queue in bytes (and, for an
        older client that gets it as ``event`` calls, in messages); the next
        is sent once the client answered this one, so a long absence never
        makes the client look too slow, and one that does not answer within
        PAGE_TIMEOUT is. Returns how many events were read."""
        replayed = 0
        self._last_id = after = max(self._last_id, since)
        settings = self.service.settings
        size = max(1, min(CATCH_UP_PAGE, settings.queue_limit // 2))
        max_bytes = min(ANSWER_BYTES, settings.queue_bytes // 2)
        pages = True  # until the client turns out to be one without ``events``
        while self.ended is None:
            await self.outbox.drained()
            page, more = await self.service.store.read(
                _replay_page, after_id=after, projects=sorted(self.watching), limit=size, max_bytes=max_bytes
            )
            if not page:
                break
            shown = [text for _, project, text in page if not self.service.is_muted(self, project)]
            if shown and pages:
                pages = await self._send_page(b"[" + b",".join(shown) + b"]")
            if shown and not pages:
                for text in shown:
                    self.deliver(OneWayCall("event", json.loads(text)))
            self._last_id = after = page[-1][0]
            replayed += len(page)
            if not more:  # what commits from now on comes live (the session subscribed first)
                break
        return replayed

    async def _send_page(self, page: bytes) -> bool:
        """``events(page)`` to the client, answered; False if the client has
        no ``events`` (nothing of the page reached it)."""
        if self.ended is not None:
            return True
        try:
            d = self.mind.callRemote("events", page)
            await d.addTimeout(PAGE_TIMEOUT, self.service.clock)
        except pb.RemoteError as e:
            remote = e.remoteType.decode() if isinstance(e.remoteType, bytes) else str(e.remoteType)
            if remote == _NO_SUCH_METHOD:
                log.info("%s session of %s has no events(): replaying event by event", self.kind, self.who)
                return False
            raise
        except defer.TimeoutError:
            if self.ended is None:
                self.service.too_slow(self.connection)
        except (pb.PBConnectionLost, pb.DeadReferenceError):
            pass  # the session ends with its connection
        return True

    def perspective_unwatch(self, projects: list[str]) -> list[str]:
        projects = arguments.project_list(projects)
        self._leave(projects)
        if self.developer is not None:
            developer_id = self.developer.id

            def save(conn: Any) -> None:
                for project in projects:
                    personal.set_watching(conn, developer_id, project, False)

            self.service.store.write(save).addErrback(_log_failure)
        return sorted(self.watching)


class AnonymousSession(ObserverSession):
    """Disposable: nothing of it is stored, and it changes nothing others see."""

    kind = "anonymous"

    def __init__(self, service: SessionHost, mind: pb.RemoteReference) -> None:
        super().__init__(service, None, mind)


class DeveloperSession(ObserverSession):
    """The one attached client of a developer's perspective."""

    kind = "developer"

    def __init__(self, service: SessionHost, developer: Developer, mind: pb.RemoteReference) -> None:
        super().__init__(service, developer, mind)
        self.alerted: set[int] = set()
        #: names this client in the bus's ``attached`` messages (several nodes)
        self.nonce = secrets.token_hex(8)
        self._attach_id: int | None = None  # the bus id of our ``attached`` message
        self._rival = 0  # the newest ``attached`` of another client seen before we knew ours
        self.replaced = False  # told goodbye: a newer login took over

    def attached_as(self, message_id: int) -> None:
        """Our ``attached`` message has bus id ``message_id``: a rival seen
        meanwhile with a higher id replaces us now."""
        self._attach_id = message_id
        if self._rival > message_id and self.ended is None:
            self.service.developer(self.developer).replace(self)  # type: ignore[arg-type]

    def outranked_by(self, message_id: int) -> bool:
        """Whether another client's ``attached`` message ``message_id`` is
        newer than ours (if ours is not known yet, decide once it is)."""
        if self._attach_id is None:
            self._rival = max(self._rival, message_id)
            return False
        return message_id > self._attach_id

    def deliver_alert(self, alert: Alert) -> None:
        if self._push_alert(alert):
            self._mark_delivered([alert.id])

    def _push_alert(self, alert: Alert) -> bool:
        """Push ``alert`` unless it was pushed already or its project is muted."""
        if alert.id in self.alerted or self.service.is_muted(self, alert.event.project):
            return False
        self.alerted.add(alert.id)
        self.deliver(OneWayCall("alert", alert_wire(alert.id, alert.developer, alert.event)))
        return True

    def _mark_delivered(self, alert_ids: list[int]) -> None:
        """Pushed to a client: no escalation for these (relays/escalation.py)."""
        if not alert_ids:
            return
        now = self.service.now()
        written = self.service.store.write(lambda conn: personal.mark_delivered(conn, alert_ids, now))
        written.addErrback(
            lambda f: log.warning("recording an alert's delivery failed: %s", f.getErrorMessage())
        )

    async def send_pending_alerts(self) -> None:
        """Push the oldest MAX_ALERTS unacknowledged alerts, paced like a
        catch-up so that a long absence never makes the client look too slow
        (one write per page records them delivered)."""
        pending = await self.service.store.read(
            personal.pending_alerts, developer_id=self.developer_id, limit=MAX_ALERTS
        )
        page = max(1, self.service.settings.queue_limit // 2)
        for start in range(0, len(pending), page):
            await self.outbox.drained()
            if self.ended is not None:
                return
            alerts = [Alert(i, self.developer.name, event) for i, event in pending[start : start + page]]  # type: ignore[union-attr]
            self._mark_delivered([alert.id for alert in alerts if self._push_alert(alert)])


def alert_wire(alert_id: int, developer: str, event: BuildEvent) -> dict[str, Any]:
    return {"alert_id": alert_id, "developer": developer, "event": event.to_dict()}


def _event_page(conn: Any, max_bytes: int = ANSWER_BYTES, **query: Any) -> list[dict[str, Any]]:
    """``queries.history_wire(**query)``, cut once they hold about
    ``max_bytes`` (always at least one): runs on a reader thread, so the
    reactor never builds more than one page of a long history."""
    page: list[dict[str, Any]] = []
    size = 0
    for row in queries.history_wire(conn, **query):
        size += approx_size(row)
        if page and size > max_bytes:
            break
        page.append(row)
    return page


def _replay_page(conn: Any, max_bytes: int, **query: Any) -> tuple[list[tuple[int, str, bytes]], bool]:
    """``queries.history_wire(**query)`` as (id, project, JSON of the dict),
    cut once the JSON holds ``max_bytes`` (always at least one): runs on a
    reader thread, so the reactor only joins a page's JSON. Also whether
    more may follow (the page was cut, or holds ``limit`` events)."""
    page: list[tuple[int, str, bytes]] = []
    size = 2  # the brackets
    rows = queries.history_wire(conn, **query)
    for row in rows:
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
        size += len(text) + 1
        if page and size > max_bytes:
            return page, True
        page.append((row["id"], row["project"], text))
    return page, len(rows) >= query["limit"]


def _log_failure(failure: Failure) -> None:
    log.error("saving watch settings failed: %s", failure.getErrorMessage())
