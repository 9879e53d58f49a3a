"""What the writer knows of committed runs, branches and projects, kept
across batches so that most deliveries need no lookup at all (see
:mod:`buildnotify.store.batch`). Writer thread only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

#: Finished runs a branch's cache entry keeps (twice as many before trimming).
DEPTH = 8

RunKey = tuple[str, str, str, str]  # provider, project, pipeline, build_id
BranchKey = tuple[str, str, str | None]  # project, pipeline, branch


@dataclasses.dataclass(slots=True)
class Run:
    """The builds row of one run as the writer sees it; ``stored`` once the row exists."""

    stored: bool
    branch: str | None
    seq: int
    attempt: int
    phase: int
    moment: datetime | None
    status: str
    result: str | None
    pending_event: int | None = None  # index into the batch's events
    dirty: bool = False


UNKNOWN: Any = object()


@dataclasses.dataclass(slots=True)
class Branch:
    """The finished runs of one (project, pipeline, branch): (provider,
    build_id) -> (seq, result) of every one with seq > ``floor`` (of all of
    them when ``floor`` is None), enough to classify builds newer than the floor."""

    results: dict[tuple[str, str], tuple[int, str]]
    floor: int | None

    @classmethod
    def load(cls, rows: Sequence[tuple[str, str, int, str]]) -> Branch:
        """From the branch's newest DEPTH + 1 finished runs, newest first."""
        if len(rows) <= DEPTH:
            return cls({(p, b): (s, r) for p, b, s, r in rows}, None)
        floor = rows[-1][2]  # runs at the floor may go on past the rows read
        return cls({(p, b): (s, r) for p, b, s, r in rows if s > floor}, floor)

    def previous(self, seq: int) -> tuple[int, str] | None:
        """The nearest finished run before ``seq``; UNKNOWN if it may lie below the floor."""
        best = None
        for found in self.results.values():
            if found[0] < seq and (best is None or found[0] > best[0]):
                best = found
        return UNKNOWN if best is None and self.floor is not None else best

    def note(self, ident: tuple[str, str], run: Run, branch: str | None) -> None:
        """Follow a change of a run (this branch's or no longer)."""
        if run.branch != branch or run.result is None:
            self.results.pop(ident, None)
        elif self.floor is None or run.seq > self.floor:
            self.results[ident] = (run.seq, run.result)
            if len(self.results) > 2 * DEPTH:
                self.floor = sorted((s for s, _ in self.results.values()), reverse=True)[DEPTH]
                self.results = {k: v for k, v in self.results.items() if v[0] > self.floor}


class RecordCache:
    """What the writer knows of committed runs, branches and projects, kept
    across batches. It is exact only while nobody else writes events, and
    only if cleared on every rollback (it already holds the rolled-back
    transaction's changes). With several writers it is checked under the
    stream lock: ``stream_head`` is the newest event id when this writer last
    committed, and a newer one means another node wrote since (store/__init__.py).
    Bounded: the least recently used half goes when a table is full."""

    def __init__(self, max_runs: int = 20_000, max_branches: int = 2_000) -> None:
        self.max_runs, self.max_branches = max_runs, max_branches
        self.runs: dict[RunKey, Run] = {}
        self.branches: dict[BranchKey, Branch] = {}
        self.projects: set[str] = set()
        self.stream_head: int | None = None

    def clear(self) -> None:
        self.runs.clear()
        self.branches.clear()
        self.projects.clear()
        self.stream_head = None

    def trim(self) -> None:
        for table, limit in ((self.runs, self.max_runs), (self.branches, self.max_branches)):
            if len(table) > limit:
                for key in list(table)[: len(table) - limit // 2]:
                    del table[key]
