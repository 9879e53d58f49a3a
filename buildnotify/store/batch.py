"""Recording a batch of deliveries in one transaction: dedupe, ordering,
transitions and alerts.

Runs on the writer thread only. A batch of deliveries costs a few statements
whatever its size: lookups take the whole batch at once and the rows go in
with one ``executemany`` per table (the statements: :mod:`~buildnotify.store.sql`;
which update wins: :mod:`~buildnotify.events`; who is alerted:
:mod:`~buildnotify.alerts`).

What the writer knows of committed runs and branches can be kept across
batches in a :class:`~buildnotify.store.cache.RecordCache`, so most
deliveries need no lookup at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from buildnotify.alerts import Alert, identities_to_alert, recipients
from buildnotify.delivery import Delivery
from buildnotify.events import (
    BuildEvent,
    Status,
    Transition,
    classify,
    is_newer,
    moment_of,
    phase_of,
    seq_of,
    utcnow,
)
from buildnotify.store.cache import DEPTH, UNKNOWN, Branch, RecordCache, Run, RunKey
from buildnotify.store.schema import alerts as alerts_table
from buildnotify.store.schema import projects
from buildnotify.store.sql import insert_ignore, statements

MAX_KEY = 255
#: Rows per lookup statement (well under every backend's parameter limit).
CHUNK = 500

_INSERT_ALERT = insert(alerts_table).returning(alerts_table.c.id)


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What became of one delivery. ``events`` are as stored (with id and
    transition); ``stale`` counts updates older than what the store had,
    acknowledged but not stored."""

    duplicate: bool
    events: tuple[BuildEvent, ...] = ()
    stale: int = 0
    alerts: tuple[Alert, ...] = ()


def storage_key(key: str) -> str:
    """Delivery keys longer than the column are stored as their hash."""
    if len(key) <= MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def record_batch(
    conn: Connection, batch: Sequence[Delivery], cache: RecordCache | None = None
) -> list[Recorded]:
    """Apply ``batch`` inside the caller's transaction; the caller commits.
    Without ``cache`` nothing is remembered past this transaction."""
    work = _Batch(conn, cache if cache is not None else RecordCache())
    try:
        return work.apply(batch)
    finally:
        work.cursor.close()


class _Batch:
    def __init__(self, conn: Connection, cache: RecordCache) -> None:
        if not conn.in_transaction():
            conn.begin()  # so that the caller's commit commits what goes through the cursor
        self.conn = conn
        self.cursor = conn.connection.cursor()
        self.sql = statements(conn.dialect)
        self.cache = cache
        self.runs: dict[RunKey, Run | None] = {}  # this batch's runs; None: not stored
        # to insert, with what the store adds: transition, delivery key, received_at
        self.events: list[tuple[BuildEvent, Transition | None, str, datetime]] = []

    def apply(self, batch: Sequence[Delivery]) -> list[Recorded]:
        seen = self._known_deliveries(batch)
        self._load_runs(batch)
        plans: list[tuple[bool, list[int], int]] = []
        delivery_rows = []
        to_db = self.sql.to_db
        for delivery in batch:
            key = (delivery.provider, storage_key(delivery.key))
            if key in seen:
                plans.append((True, [], 0))
                continue
            seen.add(key)
            indexes, stale = [], 0
            for event in delivery.events:
                index = self._place(event, key[1])
                if index is None:
                    stale += 1
                else:
                    indexes.append(index)
            plans.append((False, indexes, stale))
            delivery_rows.append(
                (key[0], key[1], delivery.source, to_db(_received_at(delivery)), len(indexes))
            )
        if delivery_rows:  # first: on SQLite the first write takes the write lock
            self.cursor.executemany(self.sql.insert_delivery, delivery_rows)
        ids = self._insert_events()
        self._save_runs(ids)
        self._ensure_projects()
        stored = [
            event.replace(id=event_id, transition=transition, delivery_key=key, received_at=received)
            for (event, transition, key, received), event_id in zip(self.events, ids, strict=True)
        ]
        alerts = self._alert_authors(stored)
        self._clear_fixed_claims(stored)
        self.cache.trim()
        out = []
        for duplicate, indexes, stale in plans:
            mine = tuple(stored[i] for i in indexes)
            ids_here = {e.id for e in mine}
            out.append(Recorded(duplicate, mine, stale, tuple(a for a in alerts if a.event.id in ids_here)))
        return out

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.cursor.execute(sql, tuple(params))
        return self.cursor.fetchall()

    # -- lookups: a few statements per batch ---------------------------------------------

    def _known_deliveries(self, batch: Sequence[Delivery]) -> set[tuple[str, str]]:
        """Keys already stored. One IN list per provider: SQLite searches the
        unique index with ``provider = ? AND key IN (...)`` but scans all of it
        for a row-value ``(provider, key) IN (...)``."""
        by_provider: dict[str, set[str]] = {}
        for d in batch:
            by_provider.setdefault(d.provider, set()).add(storage_key(d.key))
        seen = set()
        for provider, keys in by_provider.items():
            for chunk in _chunks(sorted(keys)):
                rows = self._rows(self.sql.known(len(chunk)), (provider, *chunk))
                seen.update((provider, key) for (key,) in rows)
        return seen

    def _load_runs(self, batch: Sequence[Delivery]) -> None:
        """Every run the batch touches, from the cache or in one statement."""
        cached = self.cache.runs
        missing = []
        for key in {(e.provider, e.project, e.pipeline, e.build_id) for d in batch for e in d.events}:
            run = cached.pop(key, None)
            if run is None:
                missing.append(key)
                self.runs[key] = None
            else:
                self.runs[key] = cached[key] = run  # now the most recently used
        from_db = self.sql.from_db
        for chunk in _chunks(missing):
            params = [value for key in chunk for value in key]
            for row in self._rows(self.sql.runs(len(chunk)), params):
                key = tuple(row[:4])
                branch, seq, attempt, phase, moment, status, result = row[4:]
                run = Run(True, branch, seq, attempt, phase, from_db(moment), status, result)
                self.runs[key] = cached[key] = run  # type: ignore[index]

    def _branch(self, project: str, pipeline: str, branch: str | None) -> Branch:
        """The branch's newest finished runs, from the cache or read now."""
        bkey = (project, pipeline, branch)
        entry = self.cache.branches.get(bkey)
        if entry is None:
            entry = Branch.load(self._finished(project, pipeline, branch, None, DEPTH + 1))
            for (provider, p, pl, build_id), run in self.runs.items():
                if run is not None and run.dirty and (p, pl) == (project, pipeline):
                    entry.note((provider, build_id), run, branch)  # not in the database yet
            self.cache.branches[bkey] = entry
        return entry

    def _finished(
        self, project: str, pipeline: str, branch: str | None, before: int | None, limit: int
    ) -> list[tuple[str, str, int, str]]:
        """(provider, build_id, seq, result) of the branch's newest finished runs in the database."""
        params = [project, pipeline] + ([] if branch is None else [branch])
        params += ([] if before is None else [before]) + [limit]
        sql = self.sql.finished[(branch is None, before is not None)]
        return self._rows(sql, params)

    # -- ordering and transitions ------------------------------------------------------

    def _place(self, event: BuildEvent, delivery_key: str) -> int | None:
        """Queue ``event`` for insertion with its transition; None if it is not
        newer than what we know of its run (a late or repeated update)."""
        key: RunKey = (event.provider, event.project, event.pipeline, event.build_id)
        run = self.runs[key]
        phase, moment = phase_of(event.status), moment_of(event)
        if run is not None and not is_newer(event.attempt, moment, phase, run):
            return None
        seq = run.seq if run is not None else seq_of(event)
        transition = None
        if phase == 2 and (event.status.red or event.status.green):
            if run is not None and run.result is not None:
                previous = Status(run.result)  # a re-run compares against its own last outcome
            else:
                previous = self._previous_result(key, event.branch, seq)
            transition = classify(event.status, previous)
        elif event.status is Status.RUNNING:
            transition = Transition.STARTED
        if run is None:
            run = Run(False, event.branch, seq, event.attempt, phase, moment, event.status.value, None)
            self.runs[key] = self.cache.runs[key] = run
        old_branch = run.branch
        run.attempt, run.phase, run.status, run.dirty = event.attempt, phase, event.status.value, True
        run.moment = moment or run.moment
        run.branch = event.branch or run.branch
        if transition in (Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED, Transition.PASSED):
            run.result = event.status.value
        for branch in {old_branch, run.branch}:
            entry = self.cache.branches.get((event.project, event.pipeline, branch))
            if entry is not None:
                entry.note((event.provider, event.build_id), run, branch)
        run.pending_event = len(self.events)
        self.events.append((event, transition, delivery_key, event.received_at or utcnow()))
        return run.pending_event

    def _previous_result(self, key: RunKey, branch: str | None, seq: int) -> Status | None:
        """The outcome of the nearest earlier finished run of the same
        (project, pipeline, branch), as this transaction sees it."""
        _, project, pipeline, _ = key
        found = self._branch(project, pipeline, branch).previous(seq)
        if found is UNKNOWN:  # older than what the branch's entry holds: ask the database
            found = None
            for provider, build_id, row_seq, result in self._finished(project, pipeline, branch, seq, 1):
                run = self.runs.get((provider, project, pipeline, build_id))
                found = (row_seq, run.result if run and run.result else result)
            for other, run in self.runs.items():
                if (
                    run is not None
                    and other != key
                    and other[1:3] == (project, pipeline)
                    and run.branch == branch
                    and run.result is not None
                    and run.seq < seq
                    and (found is None or run.seq > found[0])
                ):
                    found = (run.seq, run.result)
        return Status(found[1]) if found else None

    # -- writing: one executemany per table --------------------------------------------

    def _insert_events(self) -> list[int]:
        if not self.events:
            return []
        if self.sql.sqlite:
            first = self._rows(self.sql.next_ids)[0][0]
            ids = list(range(first, first + len(self.events)))
        else:
            ids = sorted(i for (i,) in self._rows(self.sql.next_ids, (len(self.events),)))
        to_db = self.sql.to_db
        rows = [
            (
                event_id,
                e.provider,
                e.project,
                e.pipeline,
                e.branch,
                e.sha,
                e.author.name,
                e.author.email,
                e.author.login,
                e.build_id,
                e.build_number,
                e.attempt,
                e.status.value,
                transition.value if transition else None,
                e.url,
                to_db(e.started_at),
                to_db(e.finished_at),
                to_db(received),
                key,
            )
            for event_id, (e, transition, key, received) in zip(ids, self.events, strict=True)
        ]
        self.cursor.executemany(self.sql.insert_event, rows)
        return ids

    def _save_runs(self, ids: list[int]) -> None:
        new, changed = [], []
        to_db = self.sql.to_db
        for key, run in self.runs.items():
            if run is None or not run.dirty:
                continue
            event_id = ids[run.pending_event] if run.pending_event is not None else None
            values = (run.branch, run.seq, run.attempt, run.phase, to_db(run.moment), run.status, run.result)
            if run.stored:
                changed.append((*values, event_id, *key))
            else:
                new.append((*key, *values, event_id))
            run.stored, run.dirty, run.pending_event = True, False, None
        if new:
            self.cursor.executemany(self.sql.insert_run, new)
        if changed:
            self.cursor.executemany(self.sql.update_run, changed)

    def _ensure_projects(self) -> None:
        names = {e.project for e, *_ in self.events} - self.cache.projects
        if not names:
            return
        now = min(received for *_, received in self.events)
        statement = insert_ignore(self.conn, projects)
        self.conn.execute(
            statement, [{"name": n, "private": False, "created_at": now} for n in sorted(names)]
        )
        self.cache.projects |= names

    def _alert_authors(self, stored: list[BuildEvent]) -> list[Alert]:
        """One lookup of the authors of every alerting event in the batch."""
        wanted = {e.id: identities_to_alert(e) for e in stored}
        emails = sorted({v for pairs in wanted.values() for k, v in pairs if k == "email"})
        logins = sorted({v for pairs in wanted.values() for k, v in pairs if k == "login"})
        if not emails and not logins:
            return []
        found: dict[tuple[str, str], tuple[int, str]] = {}
        sql = self.sql.developers(len(emails), len(logins))
        for kind, value, developer_id, name in self._rows(sql, (*emails, *logins)):
            found[(kind, value)] = (developer_id, name)
        alerts = []
        for event in stored:
            for developer_id, name in recipients(wanted[event.id], found):
                alert_id = self.conn.execute(
                    _INSERT_ALERT,
                    {"developer_id": developer_id, "event_id": event.id, "created_at": event.received_at},
                ).scalar_one()
                alerts.append(Alert(alert_id, name, event))
        return alerts

    def _clear_fixed_claims(self, stored: list[BuildEvent]) -> None:
        fixed = {(e.project, e.pipeline, e.branch or "") for e in stored if e.transition is Transition.FIXED}
        if fixed:
            self.cursor.executemany(self.sql.clear_claims, sorted(fixed))


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _received_at(delivery: Delivery) -> datetime:
    return next((e.received_at for e in delivery.events if e.received_at), None) or utcnow()
