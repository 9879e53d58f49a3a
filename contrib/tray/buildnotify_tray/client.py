"""The tray's side of the hub, in the reactor thread.

:class:`TrayClient` runs a :class:`buildnotify.client.WatchClient` and is its
listener: every callback goes on to the model through ``send(method,
payload)`` (the bridge to the GUI thread). Each time the client goes live
it asks the hub for what a push does not bring: the state of the watched
builds (``status``, and the recent events for the builds running now), the
pending alerts (``alerts``) and the projects one can see
(:func:`~buildnotify_tray.survey.visible_projects`). On a
developer's first run (nothing ever chosen) it watches every visible project;
the hub remembers a developer's watches, so that choice stays.

It carries out what the user asks from the menu (claim, release, ack,
watch, unwatch, reconnect now, sign in again) with ``WatchClient.call`` and reports
refusals to the model. If the hub refuses to watch, the projects it will
not show are found (:func:`~buildnotify_tray.survey.find_hidden`), named,
and the rest watched: one private or misspelled name no longer stops it all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.spread import pb

from buildnotify.client import Ending, NotConnected, Outcome, Phase, State, WatchClient
from buildnotify.client.core import RECONNECT_SPREAD, describe
from buildnotify.client.settings import hub_list
from buildnotify_tray.builds import Key, label
from buildnotify_tray.model import Projects
from buildnotify_tray.survey import SURVEY_TIMEOUT, find_hidden, recent_events, visible_projects

log = logging.getLogger("buildnotify.tray")

Send = Callable[[str, Any], None]
#: how many times in a row the tray drops refused projects and tries again
MAX_REPLANS = 3


class Refusal(Exception):
    """An action the hub answered with no, in words for the user."""


class TrayClient:
    """Watches for the tray; see the module doc. All methods run in the
    reactor thread."""

    def __init__(
        self,
        send: Send,
        *,
        hub: str,
        reactor: Any,
        user: str | None = None,
        token: str | None = None,
        projects: list[str] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        reconnect_spread: float = RECONNECT_SPREAD,
    ) -> None:
        self.send = send
        self.hub = hub
        self.user = user
        self._token = token
        #: what to watch; None: a developer's remembered projects (the hub's)
        self.projects: list[str] | None = list(projects) if projects else None
        self.reactor = reactor
        self.retry_policy = retry_policy
        self.reconnect_spread = reconnect_spread
        self.client: WatchClient | None = None
        self._running: Deferred[Outcome] | None = None
        self._waiting: list[Deferred[None]] = []
        self._logged_in = False
        self._stopping = False

    # -- running ----------------------------------------------------------------------

    def start(self, since: int | None = None) -> None:
        """Watch until stopped for good (then the model gets ``on_outcome``)."""
        if self.running:
            return
        self._stopping = False
        self._running = Deferred.fromCoroutine(self._run(since))
        self._running.addErrback(self._crashed)

    @property
    def running(self) -> bool:
        return self._running is not None and not self._running.called

    def stop(self) -> Deferred[None]:
        """Stop for good; fires once the connection is closed."""
        self._stopping = True
        if self.client is not None:
            self.client.stop()
        d: Deferred[None] = Deferred()
        if self.running:
            self._waiting.append(d)
        else:
            d.callback(None)
        return d

    def sign_in_again(self) -> None:
        """After a goodbye or a refusal: a new session, resuming after the
        last event seen (this one takes over from the user's other client)."""
        if self.running:
            return
        self.send("on_signing_in", None)
        self.start(self.client.position if self.client is not None else None)

    def reconnect(self) -> None:
        """While the hub is unreachable: try now rather than after the wait."""
        if self.client is not None:
            self.client.reconnect()

    async def _run(self, since: int | None) -> Outcome:
        replans = 0
        try:
            while True:
                outcome, since = await self._watch(since)
                if (
                    self._stopping
                    or outcome.ending != Ending.REFUSED
                    or not self._logged_in  # the login was refused, not the watch
                    or replans >= MAX_REPLANS
                    or not await self._drop_hidden()
                ):
                    break
                replans += 1
            self.send("on_outcome", outcome)
            return outcome
        finally:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)

    async def _watch(self, since: int | None) -> tuple[Outcome, int | None]:
        self._logged_in = False
        try:
            self.client = WatchClient(
                self,
                hub=self.hub,
                user=self.user,
                token=self._token,
                projects=self.projects,
                since=since,
                reactor=self.reactor,
                retry_policy=self.retry_policy,
                reconnect_spread=self.reconnect_spread,
            )
        except ValueError:  # anonymous, and every project asked for is hidden
            return Outcome(Ending.STOPPED, "nothing to watch: choose projects under Projects"), since
        outcome = await self.client.start()
        return outcome, self.client.position

    async def _drop_hidden(self) -> bool:
        """After the hub refused to watch: name the projects it will not show
        and watch the others. False if that is not why it refused."""
        try:
            d = Deferred.fromCoroutine(
                find_hidden(self.reactor, self._endpoint(), self.user, self._token, self.projects)
            )
            asked, hidden, visible = await d.addTimeout(SURVEY_TIMEOUT, self.reactor)
        except Exception as e:
            log.info("could not find which projects the hub refuses: %s", describe(e))
            return False
        if not hidden:
            return False
        self.projects = [p for p in asked if p not in hidden]
        self.send("on_hidden", hidden)
        self.send("on_projects", Projects(tuple(self.projects), tuple(visible)))
        return True

    def _endpoint(self) -> str:
        """The endpoint the watch last used (the hub may name several nodes)."""
        return self.client.hub if self.client is not None else hub_list(self.hub)[0]

    def _crashed(self, failure: Failure) -> None:
        log.error("the tray's client crashed: %s", failure.getTraceback())
        self.send("on_outcome", Outcome(Ending.STOPPED, f"crashed: {failure.getErrorMessage()}"))

    # -- the WatchClient's listener -------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        self.send("on_event", event)

    def on_alert(self, alert: dict[str, Any]) -> None:
        self.send("on_alert", alert)

    def on_claim(self, claim: dict[str, Any]) -> None:
        self.send("on_claim", claim)

    def on_goodbye(self, reason: str) -> None:
        self.send("on_goodbye", reason)

    def on_access_lost(self, projects: list[str], reason: str) -> None:
        """The WatchClient watches the rest from now on; so must the next one
        (and a project chosen later must not bring these back)."""
        if self.projects is not None:
            self.projects = [p for p in self.projects if p not in projects]
        for project in projects:
            self.send("on_unwatched", project)
        self.send("on_hidden", projects)

    def on_state(self, state: State) -> None:
        if state.phase == Phase.CONNECTED:
            self._logged_in = True
        self.send("on_state", state)
        if state.phase == Phase.LIVE:
            d = Deferred.fromCoroutine(self._went_live(state.watch or {}))
            d.addErrback(self._look_failed)

    async def _went_live(self, answer: dict[str, Any]) -> None:
        """What a push does not bring: the builds' state, pending alerts, and
        the projects one can see (all of them watched on a first run)."""
        watching = list(answer.get("watching") or [])
        recent = await recent_events(self._call)
        visible = await visible_projects(self._call)
        first_run = False
        if (
            self.user is not None
            and not watching
            and self.projects is None
            and visible
            and await self._first_run()
        ):
            answer = await self._call("watch", visible, None)
            self.send("on_watched", answer)
            watching, first_run = list(answer.get("watching") or []), True
        rows = await self._call("status", watching) if watching else []
        running_now = [e for e in recent if e["project"] in watching]  # status() has finished builds only
        self.send("on_status", [*rows, *running_now])
        if self.user is not None:
            self.send("on_alerts", await self._call("alerts"))
        self.send("on_projects", Projects(tuple(watching), tuple(visible), first_run))

    async def _first_run(self) -> bool:
        """A developer who never chose a project (the hub has no settings)."""
        return not await self._call("settings")

    def _look_failed(self, failure: Failure) -> None:
        if failure.check(NotConnected, pb.PBConnectionLost, pb.DeadReferenceError):
            return  # the next time it goes live, it asks again
        log.warning("could not get the builds' state: %s", failure.getErrorMessage())

    # -- what the user asks from the menu -------------------------------------------------------

    def claim(self, key: Key, note: str | None) -> None:
        async def claim() -> None:
            project, pipeline, branch = key
            await self._call("claim", project, pipeline, branch, note or None)  # pushed back to us

        self._act(f"claim {label(key)}", claim())

    def release(self, key: Key) -> None:
        async def release() -> None:
            project, pipeline, branch = key
            if not await self._call("unclaim", project, pipeline, branch):
                raise Refusal(f"you have no claim on {label(key)}")

        self._act(f"release {label(key)}", release())

    def ack(self, alert_ids: list[int]) -> None:
        async def ack() -> None:
            await self._call("ack", list(alert_ids))
            self.send("on_acked", list(alert_ids))

        self._act("acknowledge the alert" + ("s" if len(alert_ids) > 1 else ""), ack())

    def watch(self, project: str) -> None:
        async def watch() -> None:
            self._choose(project, True)
            if not self.running:  # nothing was watched: start with this one
                self.start()
                return
            answer = await self._call("watch", [project], None)
            self.send("on_watched", answer)
            self.send("on_status", await self._call("status", [project]))

        self._act(f"watch {project}", watch())

    def unwatch(self, project: str) -> None:
        async def unwatch() -> None:
            await self._call("unwatch", [project])
            self._choose(project, False)
            self.send("on_unwatched", project)

        self._act(f"stop watching {project}", unwatch())

    def _choose(self, project: str, watched: bool) -> None:
        """Keep an explicit project list in step, for the next reconnect."""
        if self.projects is None:
            return  # the hub remembers a developer's choice
        if watched and project not in self.projects:
            self.projects.append(project)
        elif not watched and project in self.projects:
            self.projects.remove(project)
        if self.client is not None:
            self.client.projects = list(self.projects)

    def _act(self, what: str, work: Coroutine[Any, Any, Any]) -> None:
        def failed(failure: Failure) -> None:
            self.send("on_action_failed", f"could not {what}: {_reason(failure.value)}")

        Deferred.fromCoroutine(work).addErrback(failed)

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        if self.client is None:
            raise NotConnected(f"not connected to {self.hub}")
        return self.client.call(method, *args)


def _reason(error: BaseException) -> str:
    if isinstance(error, NotConnected):
        return "not connected to the hub"
    if isinstance(error, Refusal | pb.RemoteError):
        return str(error)
    return describe(error)
