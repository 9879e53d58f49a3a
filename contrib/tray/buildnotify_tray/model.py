"""The tray's state, without Qt: what the icon, the menu and the
notifications show, computed from what the hub pushes.

:class:`TrayModel` is a listener of :class:`buildnotify.client.WatchClient`
(``on_event``, ``on_alert``, ``on_claim``, ``on_state``, ``on_goodbye``)
plus ``on_status`` (the hub's ``status()`` rows, to start from the current
state instead of an empty one) and ``on_outcome`` (the client stopped for
good). It must be called from one thread (the Qt one: see
:mod:`buildnotify_tray.bridge`); it never calls back into the client.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any

from buildnotify.client import SIGNED_IN_ELSEWHERE, Ending, Outcome, Phase, State

Key = tuple[str, str, "str | None"]  # (project, pipeline, branch)

RED_STATUSES = ("failure", "error")
RESULT_STATUSES = ("success", *RED_STATUSES)  # cancelled / skipped are not a result
BUILDING_STATUSES = ("queued", "running")
CONNECTED_PHASES = (Phase.CONNECTED, Phase.CATCHING_UP, Phase.LIVE)


class BuildState(enum.StrEnum):
    """The state of one (project, pipeline, branch)."""

    FAILING = "failing"
    BUILDING = "building"
    PASSING = "passing"
    UNKNOWN = "unknown"


class Overall(enum.StrEnum):
    """What the tray icon says."""

    FAILING = "failing"  # some build is red
    BUILDING = "building"  # none red, some running
    PASSING = "passing"  # all known builds green
    UNKNOWN = "unknown"  # connected, but no build known yet
    DISCONNECTED = "disconnected"  # retrying; what the menu shows may be stale
    SIGNED_IN_ELSEWHERE = "signed in elsewhere"  # another client of ours took over; stopped
    STOPPED = "stopped"  # refused by the hub, or stopped


class Colour(enum.StrEnum):
    RED = "#d32f2f"
    AMBER = "#f9a825"
    GREEN = "#388e3c"
    GREY = "#9e9e9e"


BUILD_COLOURS = {
    BuildState.FAILING: Colour.RED,
    BuildState.BUILDING: Colour.AMBER,
    BuildState.PASSING: Colour.GREEN,
    BuildState.UNKNOWN: Colour.GREY,
}
OVERALL_COLOURS = {
    Overall.FAILING: Colour.RED,
    Overall.BUILDING: Colour.AMBER,
    Overall.PASSING: Colour.GREEN,
}


def _order(event: dict[str, Any]) -> tuple[int, int, int, int]:
    """Newer builds sort later: by build number (an old build delivered late
    does not change the branch's state), then attempt, then id."""
    number = event.get("build_number")
    return (
        int(isinstance(number, int)),
        number if isinstance(number, int) else 0,
        event.get("attempt") or 0,
        event.get("id") or 0,
    )


def where(d: dict[str, Any]) -> str:
    return f"{d.get('project')} {d.get('pipeline')}@{d.get('branch') or '-'}"


def author(event: dict[str, Any]) -> str:
    a = event.get("author") or {}
    return a.get("login") or a.get("name") or a.get("email") or "?"


def build_label(event: dict[str, Any]) -> str:
    number = event.get("build_number")
    return f"#{number}" if number is not None else str(event.get("build_id") or "?")


@dataclasses.dataclass
class Build:
    """What is known of one (project, pipeline, branch)."""

    key: Key
    latest: dict[str, Any] | None = None  # the newest event of any status
    result: dict[str, Any] | None = None  # the newest finished success / failure / error
    claim: dict[str, Any] | None = None

    @property
    def failing(self) -> bool:
        return self.result is not None and self.result.get("status") in RED_STATUSES

    @property
    def building(self) -> bool:
        return self.latest is not None and self.latest.get("status") in BUILDING_STATUSES

    @property
    def state(self) -> BuildState:
        if self.failing:
            return BuildState.FAILING
        if self.building:
            return BuildState.BUILDING
        if self.result is not None:
            return BuildState.PASSING
        return BuildState.UNKNOWN

    @property
    def url(self) -> str | None:
        for event in (self.latest, self.result):
            if event is not None and event.get("url"):
                return event["url"]
        return None


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of the menu."""

    key: Key
    text: str
    state: BuildState
    colour: Colour
    url: str | None


@dataclasses.dataclass(frozen=True)
class Notification:
    kind: str  # failed, fixed, alert, claim, released, goodbye, stopped
    title: str
    body: str
    url: str | None = None
    event_id: int | None = None
    urgent: bool = False


@dataclasses.dataclass(frozen=True)
class Message:
    """What one tray balloon shows (several notifications become one)."""

    title: str
    body: str
    urgent: bool
    url: str | None


class TrayModel:
    """Latest build per (project, pipeline, branch), claims, the connection,
    and notifications waiting to be shown."""

    def __init__(self, user: str | None = None, hub: str = "") -> None:
        self.user = user
        self.hub = hub
        self.builds: dict[Key, Build] = {}
        self.phase: Phase | None = None
        self.connection = f"connecting to {hub}" if hub else "not connected"
        self.signed_in_elsewhere = False
        self.outcome: Outcome | None = None
        self.alerts: list[dict[str, Any]] = []
        self.pending: list[Notification] = []
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

    # -- the listener -----------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        changed = self._merge(event)
        if changed:
            self._notify_event(event)
        self._changed()

    def on_status(self, rows: Iterable[dict[str, Any]]) -> None:
        """The hub's ``status()``: the newest finished build of each branch,
        with its claim. Not notified: it is the state, not news."""
        for row in rows or ():
            if not isinstance(row, dict):
                continue
            self._merge(row)
            claim = row.get("claim")
            if isinstance(claim, dict):
                self._set_claim({**claim, "state": claim.get("state", "claimed")})
        self._changed()

    def on_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)
        event = alert.get("event") or {}
        self._merge(event)
        transition = event.get("transition")
        verb = {"failed": "broke", "still_failing": "still breaks", "fixed": "fixed"}.get(
            transition, str(transition)
        )
        sha = (event.get("sha") or "")[:8]
        self.pending.append(
            Notification(
                "alert",
                f"Your commit {sha} {verb} {where(event)}".replace("  ", " "),
                f"build {build_label(event)}" + (f": {event['url']}" if event.get("url") else ""),
                url=event.get("url"),
                event_id=event.get("id"),
                urgent=transition != "fixed",
            )
        )
        self._changed()

    def on_claim(self, claim: dict[str, Any]) -> None:
        self._set_claim(claim)
        state = claim.get("state")
        who = claim.get("developer")
        if who != self.user or self.user is None:
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
        if state.phase == Phase.LIVE and state.watch:
            for claim in state.watch.get("claims") or ():
                if isinstance(claim, dict):
                    self._set_claim({**claim, "state": claim.get("state", "claimed")})
        self._changed()

    def on_goodbye(self, reason: str) -> None:
        if reason == SIGNED_IN_ELSEWHERE:
            self.signed_in_elsewhere = True
            self.connection = (
                f"{self.user or 'you'} signed in elsewhere: another client took over and this tray "
                "stopped (it does not reconnect, which would only kick the other one out)"
            )
            self.pending.append(
                Notification(
                    "goodbye",
                    "Signed in elsewhere",
                    "Another buildnotify client of yours took over.",
                    urgent=True,
                )
            )
        self._changed()

    def on_outcome(self, outcome: Outcome) -> None:
        """The client stopped for good."""
        self.outcome = outcome
        if outcome.ending == Ending.SIGNED_IN_ELSEWHERE:
            self.signed_in_elsewhere = True
        else:
            self.connection = (
                f"the hub refused: {outcome.message}" if outcome.ending == Ending.REFUSED else outcome.message
            )
            if outcome.ending == Ending.REFUSED:
                self.pending.append(
                    Notification("stopped", "buildnotify stopped", self.connection, urgent=True)
                )
        self._changed()

    # -- what the view shows --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.phase in CONNECTED_PHASES and not self.signed_in_elsewhere and self.outcome is None

    @property
    def worst(self) -> Overall:
        if self.signed_in_elsewhere:
            return Overall.SIGNED_IN_ELSEWHERE
        if self.outcome is not None or self.phase == Phase.STOPPED:
            return Overall.STOPPED
        if not self.connected:
            return Overall.DISCONNECTED
        states = {b.state for b in self.builds.values()}
        if BuildState.FAILING in states:
            return Overall.FAILING
        if BuildState.BUILDING in states:
            return Overall.BUILDING
        if BuildState.PASSING in states:
            return Overall.PASSING
        return Overall.UNKNOWN

    @property
    def colour(self) -> Colour:
        return OVERALL_COLOURS.get(self.worst, Colour.GREY)

    @property
    def tooltip(self) -> str:
        worst = self.worst
        counts = {s: 0 for s in BuildState}
        for b in self.builds.values():
            counts[b.state] += 1
        if worst in (Overall.FAILING, Overall.BUILDING, Overall.PASSING):
            parts = [
                f"{counts[s]} {s}"
                for s in (BuildState.FAILING, BuildState.BUILDING, BuildState.PASSING)
                if counts[s]
            ]
            return f"buildnotify: {', '.join(parts)}"
        return (
            f"buildnotify: {worst} ({self.connection})"
            if worst != Overall.UNKNOWN
            else ("buildnotify: no builds yet")
        )

    def entries(self) -> list[Entry]:
        """The menu's lines: failing first, then building, passing, unknown;
        by name within each."""
        rank = {BuildState.FAILING: 0, BuildState.BUILDING: 1, BuildState.PASSING: 2, BuildState.UNKNOWN: 3}
        builds = sorted(
            self.builds.values(), key=lambda b: (rank[b.state], b.key[0], b.key[1], b.key[2] or "")
        )
        return [self._entry(b) for b in builds]

    def _entry(self, build: Build) -> Entry:
        project, pipeline, branch = build.key
        state = build.state
        text = f"{project} {pipeline}@{branch or '-'}: {state}"
        details = []
        if build.failing and build.building:
            details.append("rebuilding")
        shown = build.result or build.latest
        if shown is not None:
            details.append(f"{build_label(shown)} by {author(shown)}")
        if details:
            text += f" ({', '.join(details)})"
        if build.claim is not None:
            text += f"; {build.claim.get('developer')} is on it"
        return Entry(build.key, text, state, BUILD_COLOURS[state], build.url)

    def take_notifications(self) -> list[Notification]:
        """The notifications waiting, emptied. An alert about an event makes
        the plain notification of that event redundant (the hub pushes the
        event first, then the alert): only the alert is kept."""
        pending, self.pending = self.pending, []
        alerted = {n.event_id for n in pending if n.kind == "alert" and n.event_id is not None}
        return [n for n in pending if n.kind == "alert" or n.event_id not in alerted]

    # -- internals ----------------------------------------------------------------------

    def _merge(self, event: dict[str, Any]) -> bool:
        """Fold an event into its build; True if it is newer than what was known."""
        if not event.get("project") or not event.get("pipeline"):
            return False
        key: Key = (event["project"], event["pipeline"], event.get("branch"))
        build = self.builds.get(key)
        if build is None:
            build = self.builds[key] = Build(key)
        newer = build.latest is None or _order(event) > _order(build.latest)
        if newer:
            build.latest = event
        if event.get("status") in RESULT_STATUSES and (
            build.result is None or _order(event) > _order(build.result)
        ):
            build.result = event
            newer = True
            if event.get("status") == "success":
                build.claim = None  # the hub clears claims of a fixed build
        return newer

    def _set_claim(self, claim: dict[str, Any]) -> None:
        if not claim.get("project") or not claim.get("pipeline"):
            return
        key: Key = (claim["project"], claim["pipeline"], claim.get("branch"))
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


def summarize(notifications: list[Notification]) -> Message | None:
    """One balloon for a batch: the notification itself, or a count with one
    line each (most urgent first)."""
    if not notifications:
        return None
    if len(notifications) == 1:
        n = notifications[0]
        return Message(n.title, n.body, n.urgent, n.url)
    ordered = sorted(notifications, key=lambda n: (not n.urgent, n.kind != "alert"))
    urgent = any(n.urgent for n in notifications)
    first_url = next((n.url for n in ordered if n.url), None)
    return Message(
        f"{len(notifications)} build updates", "\n".join(n.title for n in ordered), urgent, first_url
    )
