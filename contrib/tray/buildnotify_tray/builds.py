"""One (project, pipeline, branch) as the tray knows it, and its state in
words: a new failure, still failing, an infrastructure error, building,
passing, or no result yet.

Only successes, failures and errors count (docs/webhooks/generic.md): a
cancelled or skipped run leaves the branch in the state of its last one
that counts, as in the hub's ``status`` and its cctray feed.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

from buildnotify.client.commands import age
from buildnotify.client.watch import author

Key = tuple[str, str, "str | None"]  # (project, pipeline, branch)

COUNTING_STATUSES = ("success", "failure", "error")
BUILDING_STATUSES = ("queued", "running")


class BuildState(enum.StrEnum):
    """The state of one branch, worst first (the tray icon shows the worst)."""

    NEW_FAILURE = "new failure"  # red, and the build before it was green (or there was none)
    STILL_FAILING = "still failing"  # red after red
    ERROR = "infrastructure error"  # the build itself broke (status error), not the code
    BUILDING = "building"  # not red, and a build is queued or running
    PASSING = "passing"
    UNKNOWN = "no result yet"  # nothing that counts so far


FAILING_STATES = (BuildState.NEW_FAILURE, BuildState.STILL_FAILING, BuildState.ERROR)
SEVERITY = tuple(BuildState)  # worst first


def label(key: Key) -> str:
    """``acme/widget ci@main`` (``ci@-`` for a build without a branch)."""
    project, pipeline, branch = key
    return f"{project} {pipeline}@{branch or '-'}"


def build_label(event: dict[str, Any]) -> str:
    number = event.get("build_number")
    return f"#{number}" if number is not None else str(event.get("build_id") or "?")


def key_of(d: dict[str, Any]) -> Key | None:
    if not d.get("project") or not d.get("pipeline"):
        return None
    return (d["project"], d["pipeline"], d.get("branch"))


def order(event: dict[str, Any]) -> tuple[int, int, int, int]:
    """Newer builds sort later: by build number (an old build delivered late
    does not change the branch's state), then attempt, then id."""
    number = event.get("build_number")
    return (
        int(isinstance(number, int)),
        number if isinstance(number, int) else 0,
        event.get("attempt") or 0,
        event.get("id") or 0,
    )


@dataclasses.dataclass
class Build:
    """What is known of one branch: its newest event of any status, its
    newest result that counts, and the claim on it."""

    key: Key
    latest: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    claim: dict[str, Any] | None = None

    def merge(self, event: dict[str, Any]) -> bool:
        """Fold in an event; True if it is newer than what was known."""
        newer = self.latest is None or order(event) > order(self.latest)
        if newer:
            self.latest = event
        if event.get("status") in COUNTING_STATUSES and (
            self.result is None or order(event) > order(self.result)
        ):
            self.result = event
            newer = True
            if event.get("status") == "success":
                self.claim = None  # the hub clears the claim of a fixed build
        return newer

    @property
    def running(self) -> dict[str, Any] | None:
        """The build queued or running now, if the newest event is one."""
        if self.latest is not None and self.latest.get("status") in BUILDING_STATUSES:
            return self.latest
        return None

    @property
    def state(self) -> BuildState:
        status = (self.result or {}).get("status")
        if status == "error":
            return BuildState.ERROR
        if status == "failure":
            still = self.result is not None and self.result.get("transition") == "still_failing"
            return BuildState.STILL_FAILING if still else BuildState.NEW_FAILURE
        if self.running is not None:
            return BuildState.BUILDING
        return BuildState.PASSING if status == "success" else BuildState.UNKNOWN

    @property
    def url(self) -> str | None:
        """The page of what the entry talks about: the running build while
        it builds, else the result."""
        first = (
            (self.latest, self.result) if self.state == BuildState.BUILDING else (self.result, self.latest)
        )
        return next((e["url"] for e in first if e is not None and e.get("url")), None)


def describe(build: Build, now: datetime, user: str | None, mine: bool) -> str:
    """The menu line: ``acme/widget ci@main: new failure, #812 by you, 4m ago;
    rebuilding #813 (1m); you are on it: "looking"``."""
    state = build.state
    running = build.running
    text = f"{label(build.key)}: {state}"
    if state == BuildState.BUILDING and running is not None:
        text += f" {_who(running, user, mine=False)}, started {_started(running, now)} ago"
        if build.result is not None:
            text += f" (last: {_result_word(build.result)} {build_label(build.result)})"
    elif build.result is not None:
        text += f", {_who(build.result, user, mine)}, {age(build.result, now)} ago"
        if running is not None:
            text += f"; rebuilding {build_label(running)} ({_started(running, now)})"
    if build.claim is not None:
        who = build.claim.get("developer")
        text += "; you are on it" if user is not None and who == user else f"; {who} is on it"
        if build.claim.get("note"):
            text += f': "{build.claim["note"]}"'
    return text


def _who(event: dict[str, Any], user: str | None, mine: bool) -> str:
    name = author(event)
    if mine or (user is not None and name == user):
        name = "you"
    return f"{build_label(event)} by {name}"


def _started(running: dict[str, Any], now: datetime) -> str:
    """How long a build has been queued or running: since the CI's start
    time, else since the hub heard of it."""
    return age({"finished_at": running.get("started_at") or running.get("received_at")}, now)


def _result_word(event: dict[str, Any]) -> str:
    return {"success": "passed", "failure": "failed", "error": "errored"}.get(event.get("status"), "?")
