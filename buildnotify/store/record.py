"""Recording deliveries: dedupe, ordering and transitions, in one transaction.

Runs on the writer thread only. A batch of deliveries costs a few statements
whatever its size: lookups take the whole batch at once and the rows go in
with one ``executemany`` per table. The hot statements go straight to the
DBAPI cursor, inside the SQLAlchemy transaction: SQLAlchemy's own work per
statement cost more than SQLite's. Values are adapted here exactly as
SQLAlchemy would, so what is stored reads back the same.

What the writer knows of committed runs and branches can be kept across
batches in a :class:`~buildnotify.store.cache.RecordCache`, so most
deliveries need no lookup at all.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, Table, insert
from sqlalchemy.dialects import postgresql, sqlite

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status, Transition, classify, utcnow
from buildnotify.store.cache import DEPTH, UNKNOWN, Branch, RecordCache, Run, RunKey
from buildnotify.store.schema import UTCDateTime, projects
from buildnotify.store.schema import alerts as alerts_table

MAX_KEY = 255
#: Rows per lookup statement (well under every backend's parameter limit).
CHUNK = 500


@dataclasses.dataclass(frozen=True)
class Recorded:
    """What became of one delivery. ``events`` are as stored (with id and
    transition); ``stale`` counts updates older than what the store had,
    acknowledged but not stored."""

    duplicate: bool
    events: tuple[BuildEvent, ...] = ()
    stale: int = 0
    alerts: tuple[Alert, ...] = ()


@dataclasses.dataclass(frozen=True)
class Alert:
    """A personal alert, committed with its event: the developer whose commit
    broke, kept breaking or fixed a build."""

    id: int
    developer: str
    event: BuildEvent


#: Transitions that alert the commit's author.
ALERTING = (Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED)


def storage_key(key: str) -> str:
    """Delivery keys longer than the column are stored as their hash."""
    if len(key) <= MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def phase_of(status: Status) -> int:
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


# -- SQL ------------------------------------------------------------------------------

_EVENT_COLUMNS = (
    "id, provider, project, pipeline, branch, sha, author_name, author_email, author_login, build_id,"
    " build_number, attempt, status, transition, url, started_at, finished_at, received_at, delivery_key"
)
_RUN_VALUES = "branch, seq, attempt, phase, moment, status, result, event_id"
_RUN_KEY = "provider, project, pipeline, build_id"
_FINISHED = (
    "SELECT provider, build_id, seq, result FROM builds"
    " WHERE project = ? AND pipeline = ? AND branch {} AND result IS NOT NULL {} ORDER BY seq DESC LIMIT ?"
)


class _Sql:
    """The hot statements as DBAPI text for one dialect (the same SQL on
    SQLite and PostgreSQL, only the placeholders differ), and the datetime
    conversions of :class:`UTCDateTime`."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.to_db: Callable[[datetime | None], Any] = _sqlite_time if self.sqlite else _utc_naive
        utc = UTCDateTime().dialect_impl(dialect)
        self.from_db: Callable[[Any], datetime | None] = utc.result_processor(dialect, None) or _same
        self.insert_event = self._marks(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({_marks(19)})")
        self.insert_delivery = self._marks(
            f"INSERT INTO deliveries (provider, key, source, received_at, event_count) VALUES ({_marks(5)})"
        )
        self.insert_run = self._marks(f"INSERT INTO builds ({_RUN_KEY}, {_RUN_VALUES}) VALUES ({_marks(12)})")
        self.update_run = self._marks(
            "UPDATE builds SET branch = ?, seq = ?, attempt = ?, phase = ?, moment = ?, status = ?,"
            " result = ?, event_id = ? WHERE provider = ? AND project = ? AND pipeline = ? AND build_id = ?"
        )
        self.finished = {
            (null, before): self._marks(
                _FINISHED.format("IS NULL" if null else "= ?", "AND seq < ?" if before else "")
            )
            for null in (False, True)
            for before in (False, True)
        }
        self.clear_claims = self._marks(
            "DELETE FROM claims WHERE project = ? AND pipeline = ? AND branch = ?"
        )
        # On SQLite the writer numbers the rows itself, under the write lock
        # (one executemany instead of an INSERT ... RETURNING per row); on
        # PostgreSQL the ids come from the column's own sequence.
        self.next_ids = (
            "SELECT coalesce(max(id), 0) + 1 FROM events"
            if self.sqlite
            else self._marks(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, ?)"
            )
        )

    def _marks(self, sql: str) -> str:
        return sql if self.mark == "?" else sql.replace("?", self.mark)

    def developers(self, emails: int, logins: int) -> str:
        """Developers by identity: one IN list per kind (an index search each)."""
        return self._marks(
            "SELECT i.kind, i.value, d.id, d.name FROM identities AS i JOIN developers AS d"
            f" ON d.id = i.developer_id WHERE (i.kind = 'email' AND i.value IN ({_marks(emails) or 'NULL'}))"
            f" OR (i.kind = 'login' AND i.value IN ({_marks(logins) or 'NULL'}))"
        )

    def known(self, count: int) -> str:
        return self._marks(f"SELECT key FROM deliveries WHERE provider = ? AND key IN ({_marks(count)})")

    def runs(self, count: int) -> str:
        """Runs by key, joined to a VALUES list: an index search per key on
        both backends (SQLite scans the whole index for a row-value IN)."""
        values = ", ".join([f"({_marks(4)})"] * count)
        return self._marks(
            "SELECT b.provider, b.project, b.pipeline, b.build_id,"
            " b.branch, b.seq, b.attempt, b.phase, b.moment, b.status, b.result"
            f" FROM (VALUES {values}) AS v JOIN builds AS b ON b.provider = v.column1"
            " AND b.project = v.column2 AND b.pipeline = v.column3 AND b.build_id = v.column4"
        )


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)


def _same(value: Any) -> Any:
    return value


def _utc_naive(value: datetime | None) -> datetime | None:
    """What :class:`UTCDateTime` stores: naive UTC; a naive input is an error."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None)


def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy stores a SQLite DATETIME: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is not None and value.tzinfo is timezone.utc:  # the usual case, in one C call
        return value.isoformat(" ", "microseconds")[:26]
    naive = _utc_naive(value)
    return None if naive is None else naive.isoformat(" ", "microseconds")


@functools.cache
def _sql(dialect: Dialect) -> _Sql:
    return _Sql(dialect)


_INSERT_ALERT = insert(alerts_table).returning(alerts_table.c.id)


# -- one batch ------------------------------------------------------------------------


class _Batch:
    def __init__(self, conn: Connection, cache: RecordCache) -> None:
        if not conn.in_transaction():
            conn.begin()  # so that the caller's commit commits what goes through the cursor
        self.conn = conn
        self.cursor = conn.connection.cursor()
        self.sql = _sql(conn.dialect)
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
        statement = _insert_ignore(self.conn, projects)
        self.conn.execute(
            statement, [{"name": n, "private": False, "created_at": now} for n in sorted(names)]
        )
        self.cache.projects |= names

    def _alert_authors(self, stored: list[BuildEvent]) -> list[Alert]:
        """One lookup of the authors of every alerting event in the batch."""
        wanted = {
            e.id: [
                (kind, value.lower())
                for kind, value in (("email", e.author.email), ("login", e.author.login))
                if value
            ]
            for e in stored
            if e.transition in ALERTING
        }
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
            who = dict(found[pair] for pair in wanted.get(event.id, ()) if pair in found)
            for developer_id, name in sorted(who.items()):
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


def _insert_ignore(conn: Connection, table: Table) -> Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no insert-or-ignore for {dialect}")


def _received_at(delivery: Delivery) -> datetime:
    return next((e.received_at for e in delivery.events if e.received_at), None) or utcnow()


def event_from_row(row: Mapping) -> BuildEvent:
    return BuildEvent(
        id=row["id"],
        provider=row["provider"],
        project=row["project"],
        pipeline=row["pipeline"],
        branch=row["branch"],
        sha=row["sha"],
        author=Author(row["author_name"], row["author_email"], row["author_login"]),
        build_id=row["build_id"],
        build_number=row["build_number"],
        attempt=row["attempt"],
        status=Status(row["status"]),
        transition=Transition(row["transition"]) if row["transition"] else None,
        url=row["url"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        received_at=row["received_at"],
        delivery_key=row["delivery_key"],
    )
