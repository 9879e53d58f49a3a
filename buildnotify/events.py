"""The normalized build event: one shape for every CI system.

Providers turn webhooks into :class:`BuildEvent` values; the store assigns the
monotonic ``id`` and the ``transition``; everything downstream (history,
fan-out, alerts) reads only this module's types.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Protocol

from buildnotify.logtext import printable

log = logging.getLogger(__name__)


class Status(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)

    @property
    def red(self) -> bool:
        return self in (Status.FAILURE, Status.ERROR)

    @property
    def green(self) -> bool:
        return self is Status.SUCCESS


#: What an unknown provider status becomes: finished and needing a look, so a
#: new CI status is noticed rather than silently reported as green.
FALLBACK_STATUS = Status.ERROR


class Transition(enum.StrEnum):
    STARTED = "started"
    FAILED = "failed"
    STILL_FAILING = "still_failing"
    FIXED = "fixed"
    PASSED = "passed"


def map_status(provider: str, table: Mapping[str, Status], raw: str | None) -> Status:
    """Look ``raw`` up in a provider's status table; unknown values fall back
    to :data:`FALLBACK_STATUS` and are logged, never raised."""
    key = (raw or "").strip().lower()
    try:
        return table[key]
    except KeyError:
        shown = raw if raw is None else printable(raw, 100)
        log.warning("%s: unknown status %r mapped to %s", provider, shown, FALLBACK_STATUS.value)
        return FALLBACK_STATUS


def classify(status: Status, previous: Status | None) -> Transition | None:
    """The transition of a build against the previous *finished* build of the
    same (project, pipeline, branch); ``previous`` is None when there is none.

    Cancelled and skipped builds say nothing about health: they get no
    transition and are not a "previous" for later builds (the store skips them).
    """
    if status is Status.RUNNING:
        return Transition.STARTED
    if status.red:
        return Transition.STILL_FAILING if previous is not None and previous.red else Transition.FAILED
    if status.green:
        return Transition.FIXED if previous is not None and previous.red else Transition.PASSED
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Author:
    name: str | None = None
    email: str | None = None
    login: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class BuildEvent:
    """One update of one build, as the hub understands it.

    ``build_id`` identifies the run within (provider, project, pipeline);
    ``attempt`` orders re-runs of the same run; ``build_number`` orders runs
    on a branch.  ``id`` and ``transition`` are filled in by the store.
    """

    provider: str
    project: str
    pipeline: str
    build_id: str
    status: Status
    branch: str | None = None
    sha: str | None = None
    author: Author = Author()
    build_number: int | None = None
    attempt: int = 1
    url: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    received_at: datetime | None = None
    delivery_key: str | None = None
    transition: Transition | None = None
    id: int | None = None

    def replace(self, **changes: object) -> BuildEvent:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able data: the shape of ``history --json`` and the wire."""
        return {
            "id": self.id,
            "provider": self.provider,
            "project": self.project,
            "pipeline": self.pipeline,
            "branch": self.branch,
            "sha": self.sha,
            "author": dataclasses.asdict(self.author),
            "build_id": self.build_id,
            "build_number": self.build_number,
            "attempt": self.attempt,
            "status": self.status.value,
            "transition": self.transition.value if self.transition else None,
            "url": self.url,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "received_at": _iso(self.received_at),
            "delivery_key": self.delivery_key,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- ordering: which update of a run wins ---------------------------------------------
# Events arrive late and twice, and an older update must never overwrite a
# newer one. Also where a run sits among the runs of its branch, which
# decides what "the previous build" is.


class RunPosition(Protocol):
    """What the store knows of a run's newest update (store/cache.py's Run)."""

    attempt: int
    moment: datetime | None
    phase: int


def phase_of(status: Status) -> int:
    """queued 0 < running 1 < finished 2."""
    if status is Status.QUEUED:
        return 0
    return 1 if status is Status.RUNNING else 2


def moment_of(event: BuildEvent) -> datetime | None:
    """When the CI says this update happened: the latest timestamp it carries."""
    return event.finished_at or event.started_at


def is_newer(attempt: int, moment: datetime | None, phase: int, than: RunPosition) -> bool:
    """Whether an update is newer than ``than``, what the store has of its run: a later
    attempt; else a later CI timestamp (a GitLab or Buildkite retry finishes
    again under the same attempt); else a later phase (queued < running <
    finished). A repeat of the same update is not newer."""
    if attempt != than.attempt:
        return attempt > than.attempt
    if moment is not None and than.moment is not None and moment != than.moment:
        return moment > than.moment
    return phase > than.phase


def seq_of(event: BuildEvent) -> int:
    """Where a run sits among the runs of its branch: the CI's build number,
    else its start time in milliseconds."""
    if event.build_number is not None:
        return event.build_number
    moment = event.started_at or event.finished_at or event.received_at
    return int(moment.timestamp() * 1000) if moment else 0
