"""Which update of a run wins: events arrive late and twice, and an older
update must never overwrite a newer one. Also where a run sits among the
runs of its branch, which decides what "the previous build" is.
"""

from __future__ import annotations

from datetime import datetime

from buildnotify.events import BuildEvent, Status
from buildnotify.store.cache import Run


def phase_of(status: Status) -> int:
    """queued 0 < running 1 < finished 2."""
    if status is Status.QUEUED:
        return 0
    return 1 if status is Status.RUNNING else 2


def moment_of(event: BuildEvent) -> datetime | None:
    """When the CI says this update happened: the latest timestamp it carries."""
    return event.finished_at or event.started_at


def is_newer(attempt: int, moment: datetime | None, phase: int, run: Run) -> bool:
    """Whether an update is newer than what the store has of its run: a later
    attempt; else a later CI timestamp (a GitLab or Buildkite retry finishes
    again under the same attempt); else a later phase (queued < running <
    finished). A repeat of the same update is not newer."""
    if attempt != run.attempt:
        return attempt > run.attempt
    if moment is not None and run.moment is not None and moment != run.moment:
        return moment > run.moment
    return phase > run.phase


def seq_of(event: BuildEvent) -> int:
    """Where a run sits among the runs of its branch: the CI's build number,
    else its start time in milliseconds."""
    if event.build_number is not None:
        return event.build_number
    moment = event.started_at or event.finished_at or event.received_at
    return int(moment.timestamp() * 1000) if moment else 0
