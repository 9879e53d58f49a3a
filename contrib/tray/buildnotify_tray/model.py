"""The tray's state, without Qt: what the icon, the menu and the balloons
show, computed from what the hub pushes and what the tray asked it.

:class:`TrayModel` gets the :class:`buildnotify.client.WatchClient`'s
callbacks (``on_event``, ``on_alert``, ``on_claim``, ``on_state``,
``on_goodbye``) and what :class:`~buildnotify_tray.client.TrayClient`
finds out (``on_status``, ``on_alerts``, ``on_acked``, ``on_projects``,
``on_watched``, ``on_hidden``, ``on_unwatched``, ``on_action_failed``, ``on_signing_in``,
``on_outcome``). It must be called from one thread (the Qt one: see
:mod:`buildnotify_tray.bridge`) and never calls the hub itself.

Time comes from ``clock.seconds()`` (the reactor, or a
``twisted.internet.task.Clock`` in tests): the age of each build, and since
when the list is stale.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from buildnotify.client import SIGNED_IN_ELSEWHERE, Ending, Outcome, Phase, State
from buildnotify.client.commands import age
from buildnotify.client.watch import author, where
from buildnotify_tray.builds import (
    FAILING_STATES,
    SEVERITY,
    Build,
    BuildState,
    Key,
    build_label,
    describe,
    key_of,
    label,
)
from buildnotify_tray.notifications import Notification, without_duplicates


class Clock(Protocol):
    def seconds(self) -> float: ...


class WallClock:
    def seconds(self) -> float:
        return time.time()


class Link(enum.StrEnum):
    """The connection, as the user needs to know it."""

    CONNECTING = "connecting"  # not live yet
    LIVE = "live"
    STALE = "not live"  # was live; the hub is unreachable: the builds shown are as of `as_of`
    SIGNED_OUT = "signed in elsewhere"  # another client of ours took over; "Sign in again" to return
    STOPPED = "stopped"  # refused by the hub, or stopped


class Colour(enum.StrEnum):
    RED = "#d32f2f"
    PURPLE = "#7b1fa2"
    AMBER = "#f9a825"
    GREEN = "#388e3c"
    GREY = "#9e9e9e"


STATE_COLOURS = {
    BuildState.NEW_FAILURE: Colour.RED,
    BuildState.STILL_FAILING: Colour.RED,
    BuildState.ERROR: Colour.PURPLE,
    BuildState.BUILDING: Colour.AMBER,
    BuildState.PASSING: Colour.GREEN,
    BuildState.UNKNOWN: Colour.GREY,
}
ALERT_STATES = {
    "failed": BuildState.NEW_FAILURE,
    "still_failing": BuildState.STILL_FAILING,
    "fixed": BuildState.PASSING,
}
ENDED_LINKS = (Link.SIGNED_OUT, Link.STOPPED)
STALE_PREFIX = "Not live: builds as of"
NO_BUILDS_NOTE = "no builds yet (misspelled?)"
NOT_VISIBLE_NOTE = "not visible (no such project, or private)"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One build line of the menu."""

    key: Key
    text: str
    state: BuildState
    colour: Colour
    url: str | None
    mine: bool  # failing, and the commit is the user's
    claimed_by: str | None


@dataclasses.dataclass(frozen=True)
class AlertEntry:
    """One pending personal alert: your commit broke or fixed a build."""

    alert_id: int
    text: str
    url: str | None
    urgent: bool
    state: BuildState  # what the build became: its icon


@dataclasses.dataclass(frozen=True)
class ProjectChoice:
    project: str
    watched: bool
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Projects:
    """What the tray watches and what it could (the projects one can see)."""

    watching: tuple[str, ...]
    visible: tuple[str, ...]
    first_run: bool = False  # a developer who had never chosen: all visible ones were watched


class TrayModel:
    """Builds per (project, pipeline, branch), claims, pending alerts, the
    projects, the connection, and notifications waiting to be shown."""

    def __init__(self, user: str | None = None, hub: str = "", clock: Clock | None = None) -> None:
        self.user = user
        self.hub = hub
        self.clock = clock or WallClock()
        self.builds: dict[Key, Build] = {}
        self.phase: Phase | None = None
        self.connection = f"connecting to {hub}" if hub else "not connected"
        self.lost_at: float | None = None  # when the last live connection ended
        self.signed_out = False
        self.ended: Outcome | None = None
        self.alerts: dict[int, dict[str, Any]] = {}  # pending, by alert id
        self.my_events: set[int] = set()  # events of the user's alerts (acknowledged or not)
        self.watching: tuple[str, ...] | None = None
        self.visible: tuple[str, ...] | None = None  # None until the tray asked the hub
        self.hidden: tuple[str, ...] = ()
        self.first_run = False
        self.pending: list[Notification] = []
        self._was_live = False
        self._subscribers: list[Callable[[], None]] = []

    # -- observers --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[], None]) -> None:
        """``callback()`` after every change."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[], None]) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def _changed(self) -> None:
        for callback in list(self._subscribers):
            callback()

    # -- what the hub pushes ------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        if self._merge(event):
            self._notify_event(event)
        self._changed()

    def on_alert(self, alert: dict[str, Any]) -> None:
        alert_id = alert.get("alert_id")
        if not isinstance(alert_id, int) or alert_id in self.alerts:
            return  # the hub sends pending alerts again on every login
        self._add_alert(alert)
        event = alert.get("event") or {}
        self.pending.append(
            Notification(
                "alert",
                alert_title(event),
                f"build {build_label(event)}" + (f": {event['url']}" if event.get("url") else ""),
                url=event.get("url"),
                event_id=event.get("id"),
                urgent=event.get("transition") != "fixed",
            )
        )
        self._changed()

    def on_claim(self, claim: dict[str, Any]) -> None:
        self._set_claim(claim)
        state = claim.get("state")
        who = claim.get("developer")
        if self.user is None or who != self.user:
            if state == "claimed":
                note = f'"{claim["note"]}"' if claim.get("note") else "claimed it"
                self.pending.append(Notification("claim", f"{who} is on {where(claim)}", note))
            elif state == "released":
                self.pending.append(
                    Notification("released", f"{who} released {where(claim)}", "nobody is on it now")
                )
            # cleared: the build was fixed; the fix is notified already
        self._changed()

    def on_state(self, state: State) -> None:
        self.phase = state.phase
        self.connection = state.message
        self.hub = state.hub  # of a hub of several nodes: the one in use
        if state.phase == Phase.LIVE:
            self._was_live = True
            self.lost_at = None
            self._watch_answer(state.watch or {})
        elif self._was_live and self.lost_at is None:
            self.lost_at = self.clock.seconds()
        self._changed()

    def on_goodbye(self, reason: str) -> None:
        if reason == SIGNED_IN_ELSEWHERE:
            self._signed_out()
            self.pending.append(
                Notification(
                    "goodbye",
                    "Signed in elsewhere",
                    "Another buildnotify client of yours took over. Sign in again from the menu.",
                    urgent=True,
                )
            )
        self._changed()

    # -- what the tray found out ----------------------------------------------------------

    def on_status(self, rows: Iterable[dict[str, Any]]) -> None:
        """Builds as they are: the hub's ``status()`` (the newest build that
        counts of each branch, with its claim) or recent ``history()``.
        Not notified: it is the state, not news."""
        for row in rows or ():
            if not isinstance(row, dict):
                continue
            self._merge(row)
            claim = row.get("claim")
            if isinstance(claim, dict):
                self._set_claim(claim)
        self._changed()

    def on_watched(self, answer: dict[str, Any]) -> None:
        """The hub's answer to a ``watch`` the tray made (a project chosen)."""
        self._watch_answer(answer or {})
        self._changed()

    def on_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        """The hub's ``alerts()``: every pending alert (shown in the menu
        until acknowledged; an alert acknowledged elsewhere goes away)."""
        self.alerts = {}
        for alert in alerts or ():
            if isinstance(alert, dict) and isinstance(alert.get("alert_id"), int):
                self._add_alert(alert)
        self._changed()

    def on_acked(self, alert_ids: Iterable[int]) -> None:
        for alert_id in alert_ids:
            self.alerts.pop(alert_id, None)
        self._changed()

    def on_projects(self, projects: Projects) -> None:
        self.watching = tuple(projects.watching)
        self.visible = tuple(projects.visible)
        self.first_run = self.first_run or projects.first_run
        self._changed()

    def on_hidden(self, hidden: Iterable[str]) -> None:
        """Projects asked for that the hub refuses to show: named, not watched."""
        new = sorted(set(hidden) - set(self.hidden))
        self.hidden = tuple(sorted({*self.hidden, *new}))
        if new:
            self.pending.append(
                Notification("hidden", f"Not watching {', '.join(new)}", NOT_VISIBLE_NOTE, urgent=True)
            )
        self._changed()

    def on_unwatched(self, project: str) -> None:
        if self.watching is not None:
            self.watching = tuple(p for p in self.watching if p != project)
        self.builds = {k: b for k, b in self.builds.items() if k[0] != project}
        self._changed()

    def on_action_failed(self, message: str) -> None:
        self.pending.append(Notification("refused", "buildnotify", message, urgent=True))
        self._changed()

    def on_signing_in(self, _: Any = None) -> None:
        """ "Sign in again" was chosen: a new session is on its way."""
        self.signed_out = False
        self.ended = None
        self.connection = f"signing in again to {self.hub}"
        self._changed()

    def on_outcome(self, outcome: Outcome) -> None:
        """The client stopped for good."""
        if outcome.ending == Ending.SIGNED_IN_ELSEWHERE:
            self._signed_out()
        else:
            self.ended = outcome
            if self._was_live and self.lost_at is None:
                self.lost_at = self.clock.seconds()
            if outcome.ending == Ending.REFUSED:
                self.connection = f"the hub refused: {outcome.message}"
                self.pending.append(
                    Notification("stopped", "buildnotify stopped", self.connection, urgent=True)
                )
            else:
                self.connection = outcome.message
        self._changed()

    # -- what the view shows --------------------------------------------------------------

    @property
    def link(self) -> Link:
        if self.signed_out:
            return Link.SIGNED_OUT
        if self.ended is not None:
            return Link.STOPPED
        if self.phase == Phase.LIVE:
            return Link.LIVE
        return Link.STALE if self.lost_at is not None else Link.CONNECTING

    @property
    def worst(self) -> BuildState | None:
        """The worst state of the builds; None before any is known."""
        states = {b.state for b in self.builds.values()}
        return next((s for s in SEVERITY if s in states), None)

    @property
    def colour(self) -> Colour:
        """The icon's colour: the worst build's, kept while the hub is
        unreachable (red stays red); grey once the tray has stopped."""
        worst = self.worst
        if self.link in ENDED_LINKS or worst is None:
            return Colour.GREY
        return STATE_COLOURS[worst]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.seconds(), timezone.utc)

    @property
    def as_of(self) -> str | None:
        """When the builds shown were last known to be current (local
        HH:MM), while the tray is not live; None while live."""
        if self.lost_at is None or self.link == Link.LIVE:
            return None
        return datetime.fromtimestamp(self.lost_at).astimezone().strftime("%H:%M")

    def header(self) -> list[str]:
        """The menu's first lines: the connection, and what is not shown."""
        link = self.link
        lines = []
        if link == Link.LIVE:
            who = f" as {self.user}" if self.user else " anonymously"
            lines.append(f"Live on {self.hub}{who}")
        elif link == Link.SIGNED_OUT:
            lines.append(f"Signed in elsewhere at {self.as_of}: another client of yours took over")
            lines.append("Builds below are as of then, not updated")
        elif link == Link.STOPPED:
            lines.append(self.connection)
            if self.as_of:
                lines.append(f"Builds below are as of {self.as_of}, not updated")
        elif link == Link.STALE:
            lines.append(f"{STALE_PREFIX} {self.as_of} (hub unreachable)")
            lines.append(self.connection)
        else:
            lines.append(self.connection)
        if self.first_run and self.watching:
            lines.append(f"Watching all {len(self.watching)} projects you can see (change in Projects)")
        if self.hidden:
            lines.append(f"Not visible: {', '.join(self.hidden)} (no such project, or private)")
        unbuilt = self.unbuilt()
        if unbuilt:
            lines.append(f"No builds yet: {', '.join(unbuilt)} (misspelled?)")
        return lines

    @property
    def tooltip(self) -> str:
        counts: dict[BuildState, int] = {}
        for build in self.builds.values():
            counts[build.state] = counts.get(build.state, 0) + 1
        parts = [f"{counts[s]} {s}" for s in SEVERITY if counts.get(s)]
        text = f"buildnotify: {', '.join(parts)}" if parts else "buildnotify: no builds yet"
        link = self.link
        if link == Link.STALE:
            text += f"\nnot live: as of {self.as_of} (hub unreachable)"
        elif link in ENDED_LINKS:
            text += f"\n{self.header()[0]}"
        elif link == Link.CONNECTING:
            text += f"\n{self.connection}"
        if self.alerts:
            text += f"\n{len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''} for you"
        return text

    def entries(self) -> list[Entry]:
        """The build lines: worst first (new failures, still failing,
        errors, building, passing, unknown), by name within each."""
        rank = {state: n for n, state in enumerate(SEVERITY)}
        builds = sorted(
            self.builds.values(), key=lambda b: (rank[b.state], b.key[0], b.key[1], b.key[2] or "")
        )
        now = self.now()
        entries = []
        for build in builds:
            mine = self._mine(build)
            claim = build.claim or {}
            entries.append(
                Entry(
                    build.key,
                    describe(build, now, self.user, mine),
                    build.state,
                    STATE_COLOURS[build.state],
                    build.url,
                    mine,
                    claim.get("developer"),
                )
            )
        return entries

    def alert_entries(self) -> list[AlertEntry]:
        now = self.now()
        out = []
        for alert_id, alert in self.alerts.items():
            event = alert.get("event") or {}
            text = f"{alert_title(event)} ({build_label(event)}, {age(event, now)} ago)"
            fixed = event.get("transition") == "fixed"
            state = ALERT_STATES.get(event.get("transition"), BuildState.UNKNOWN)
            out.append(AlertEntry(alert_id, text, event.get("url"), not fixed, state))
        return out

    def project_choices(self) -> list[ProjectChoice]:
        """The projects one can watch (visible ones and watched ones), with a
        note for a watched one that has no builds."""
        watching = set(self.watching or ())
        unbuilt = set(self.unbuilt())
        return [
            ProjectChoice(p, p in watching, NO_BUILDS_NOTE if p in unbuilt else "")
            for p in sorted(watching | set(self.visible or ()))
        ]

    def unbuilt(self) -> list[str]:
        """Watched projects without a single build known: misspelled, or new
        (known once the tray has asked the hub what one can see)."""
        if self.visible is None:
            return []
        built = {key[0] for key in self.builds} | set(self.visible)
        return [p for p in self.watching or () if p not in built]

    def can_act(self) -> bool:
        """Claims and acknowledgements need a developer and a live session."""
        return self.user is not None and self.link == Link.LIVE

    def take_notifications(self) -> list[Notification]:
        """The notifications waiting, emptied."""
        pending, self.pending = self.pending, []
        return without_duplicates(pending)

    # -- internals ----------------------------------------------------------------------

    def _signed_out(self) -> None:
        self.signed_out = True
        if self.lost_at is None:
            self.lost_at = self.clock.seconds()
        self.connection = f"{self.user or 'you'} signed in elsewhere"

    def _mine(self, build: Build) -> bool:
        if build.state not in FAILING_STATES or build.result is None:
            return False
        if build.result.get("id") in self.my_events:
            return True
        return self.user is not None and author(build.result) == self.user

    def _watch_answer(self, answer: dict[str, Any]) -> None:
        if isinstance(answer.get("watching"), list):
            self.watching = tuple(answer["watching"])
        for claim in answer.get("claims") or ():
            if isinstance(claim, dict):
                self._set_claim(claim)

    def _add_alert(self, alert: dict[str, Any]) -> None:
        self.alerts[alert["alert_id"]] = alert
        event = alert.get("event") or {}
        if isinstance(event.get("id"), int):
            self.my_events.add(event["id"])
        self._merge(event)

    def _merge(self, event: dict[str, Any]) -> bool:
        key = key_of(event)
        if key is None:
            return False
        return self.builds.setdefault(key, Build(key)).merge(event)

    def _set_claim(self, claim: dict[str, Any]) -> None:
        """A claim pushed, or seeded from a status row or a watch answer
        (those have no ``state``: claimed)."""
        key = key_of(claim)
        if key is None:
            return
        if claim.get("state", "claimed") == "claimed":
            self.builds.setdefault(key, Build(key)).claim = claim
        elif key in self.builds:
            self.builds[key].claim = None

    def _notify_event(self, event: dict[str, Any]) -> None:
        transition = event.get("transition")
        if transition not in ("failed", "fixed"):
            return
        self.pending.append(
            Notification(
                transition,
                f"{where(event)} {transition}",
                f"build {build_label(event)} by {author(event)}",
                url=event.get("url"),
                event_id=event.get("id"),
                urgent=transition == "failed",
            )
        )


def alert_title(event: dict[str, Any]) -> str:
    """``Your commit 1a2b3c4d broke acme/widget ci@main``."""
    verb = {"failed": "broke", "still_failing": "still breaks", "fixed": "fixed"}.get(
        event.get("transition"), "built"
    )
    sha = (event.get("sha") or "")[:8]
    return " ".join(part for part in ("Your commit", sha, verb, where(event)) if part)


__all__ = [
    "AlertEntry",
    "BuildState",
    "Colour",
    "Entry",
    "Link",
    "ProjectChoice",
    "Projects",
    "TrayModel",
    "label",
]
