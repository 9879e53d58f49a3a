"""Recording deliveries: dedupe, ordering and transitions, in one transaction.

Runs on the writer thread only. A batch of deliveries is applied with a few
bulk statements; ``RunState`` rows are cached for the batch so later events in
the same batch see earlier ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, Insert, Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from buildnotify.events import Author, BuildEvent, Status, Transition, classify, utcnow
from buildnotify.ingest.base import Delivery
from buildnotify.store.schema import alerts as alerts_table
from buildnotify.store.schema import builds, claims, deliveries, developers, events, identities, projects

MAX_KEY = 255


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


@dataclasses.dataclass
class _Run:
    """The builds row of one run, as this batch sees it."""

    row_id: int | None
    branch: str | None
    seq: int
    attempt: int
    phase: int
    moment: datetime | None
    status: str
    result: str | None
    pending_event: int | None = None  # index into the batch's event rows
    dirty: bool = False


RunKey = tuple[str, str, str, str]


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


def is_newer(attempt: int, moment: datetime | None, phase: int, run: _Run) -> bool:
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


def record_batch(conn: Connection, batch: Sequence[Delivery]) -> list[Recorded]:
    """Apply ``batch`` inside the caller's transaction; the caller commits."""
    return _Batch(conn).apply(batch)


class _Batch:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.runs: dict[RunKey, _Run | None] = {}
        self.event_rows: list[dict] = []

    def apply(self, batch: Sequence[Delivery]) -> list[Recorded]:
        seen = self._known_deliveries(batch)
        plans: list[tuple[bool, list[int], int]] = []
        delivery_rows = []
        for delivery in batch:
            key = (delivery.provider, storage_key(delivery.key))
            if key in seen:
                plans.append((True, [], 0))
                continue
            seen.add(key)
            indexes, stale = [], 0
            for event in delivery.events:
                index = self._place(
                    event.replace(delivery_key=key[1], received_at=event.received_at or utcnow())
                )
                if index is None:
                    stale += 1
                else:
                    indexes.append(index)
            plans.append((False, indexes, stale))
            delivery_rows.append(
                {
                    "provider": key[0],
                    "key": key[1],
                    "source": delivery.source,
                    "received_at": _received_at(delivery),
                    "event_count": len(indexes),
                }
            )
        ids = self._insert_events()
        self._save_runs(ids)
        self._ensure_projects()
        if delivery_rows:
            self.conn.execute(insert(deliveries), delivery_rows)
        stored = [self._stored(i, event_id) for i, event_id in enumerate(ids)]
        alerts = self._alert_authors(stored)
        self._clear_fixed_claims(stored)
        out = []
        for duplicate, indexes, stale in plans:
            mine = tuple(stored[i] for i in indexes)
            ids_here = {e.id for e in mine}
            out.append(Recorded(duplicate, mine, stale, tuple(a for a in alerts if a.event.id in ids_here)))
        return out

    def _alert_authors(self, stored: list[BuildEvent]) -> list[Alert]:
        alerts = []
        for event in stored:
            if event.transition not in ALERTING:
                continue
            wanted = [
                (kind, value.lower())
                for kind, value in (("email", event.author.email), ("login", event.author.login))
                if value
            ]
            if not wanted:
                continue
            rows = self.conn.execute(
                select(developers.c.id, developers.c.name)
                .join(identities, identities.c.developer_id == developers.c.id)
                .where(tuple_(identities.c.kind, identities.c.value).in_(wanted))
                .distinct()
            ).all()
            for developer_id, name in rows:
                alert_id = self.conn.execute(
                    insert(alerts_table).returning(alerts_table.c.id),
                    {"developer_id": developer_id, "event_id": event.id, "created_at": event.received_at},
                ).scalar_one()
                alerts.append(Alert(alert_id, name, event))
        return alerts

    def _clear_fixed_claims(self, stored: list[BuildEvent]) -> None:
        for event in stored:
            if event.transition is Transition.FIXED:
                self.conn.execute(
                    delete(claims).where(
                        claims.c.project == event.project,
                        claims.c.pipeline == event.pipeline,
                        claims.c.branch == (event.branch or ""),
                    )
                )

    def _known_deliveries(self, batch: Sequence[Delivery]) -> set[tuple[str, str]]:
        keys = {(d.provider, storage_key(d.key)) for d in batch}
        query = select(deliveries.c.provider, deliveries.c.key).where(
            tuple_(deliveries.c.provider, deliveries.c.key).in_(list(keys))
        )
        return {(p, k) for p, k in self.conn.execute(query)}

    # -- ordering and transitions ------------------------------------------------

    def _place(self, event: BuildEvent) -> int | None:
        """Queue ``event`` for insertion with its transition; None if it is not
        newer than what we know of its run (a late or repeated update)."""
        key: RunKey = (event.provider, event.project, event.pipeline, event.build_id)
        run = self._run(key)
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
            run = _Run(None, event.branch, seq, event.attempt, phase, moment, event.status.value, None)
            self.runs[key] = run
        run.attempt, run.phase, run.status, run.dirty = event.attempt, phase, event.status.value, True
        run.moment = moment or run.moment
        run.branch = event.branch or run.branch
        if transition in (Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED, Transition.PASSED):
            run.result = event.status.value
        run.pending_event = len(self.event_rows)
        self.event_rows.append(_event_row(event.replace(transition=transition)))
        return run.pending_event

    def _run(self, key: RunKey) -> _Run | None:
        if key not in self.runs:
            row = self.conn.execute(
                select(builds).where(
                    builds.c.provider == key[0],
                    builds.c.project == key[1],
                    builds.c.pipeline == key[2],
                    builds.c.build_id == key[3],
                )
            ).first()
            self.runs[key] = (
                None
                if row is None
                else _Run(
                    row.id, row.branch, row.seq, row.attempt, row.phase, row.moment, row.status, row.result
                )
            )
        return self.runs[key]

    def _previous_result(self, key: RunKey, branch: str | None, seq: int) -> Status | None:
        """The outcome of the nearest earlier finished run of the same
        (project, pipeline, branch), from the database and this batch."""
        _, project, pipeline, _ = key
        same_branch = builds.c.branch.is_(None) if branch is None else builds.c.branch == branch
        row = self.conn.execute(
            select(builds.c.provider, builds.c.build_id, builds.c.seq, builds.c.result)
            .where(
                builds.c.project == project,
                builds.c.pipeline == pipeline,
                same_branch,
                builds.c.seq < seq,
                builds.c.result.is_not(None),
            )
            .order_by(builds.c.seq.desc())
            .limit(1)
        ).first()
        best: tuple[int, str] | None = None
        if row is not None:
            cached = self.runs.get((row.provider, project, pipeline, row.build_id))
            best = (row.seq, cached.result if cached and cached.result else row.result)
        for other, run in self.runs.items():
            if (
                run is not None
                and other != key
                and other[1:3] == (project, pipeline)
                and run.branch == branch
                and run.result is not None
                and run.seq < seq
                and (best is None or run.seq > best[0])
            ):
                best = (run.seq, run.result)
        return Status(best[1]) if best else None

    # -- writing -----------------------------------------------------------------

    def _insert_events(self) -> list[int]:
        if not self.event_rows:
            return []
        result = self.conn.execute(
            insert(events).returning(events.c.id, sort_by_parameter_order=True), self.event_rows
        )
        return [row.id for row in result]

    def _save_runs(self, ids: list[int]) -> None:
        new, changed = [], []
        for (provider, project, pipeline, build_id), run in self.runs.items():
            if run is None or not run.dirty:
                continue
            values = {
                "branch": run.branch,
                "seq": run.seq,
                "attempt": run.attempt,
                "phase": run.phase,
                "moment": run.moment,
                "status": run.status,
                "result": run.result,
                "event_id": ids[run.pending_event] if run.pending_event is not None else None,
            }
            if run.row_id is None:
                new.append(
                    {"provider": provider, "project": project, "pipeline": pipeline, "build_id": build_id}
                    | values
                )
            else:
                changed.append({"b_id": run.row_id} | values)
        if new:
            self.conn.execute(insert(builds), new)
        if changed:
            self.conn.execute(update(builds).where(builds.c.id == bindparam("b_id")), changed)

    def _ensure_projects(self) -> None:
        names = {row["project"] for row in self.event_rows}
        if not names:
            return
        now = min(row["received_at"] for row in self.event_rows)
        statement = _insert_ignore(self.conn, projects)
        self.conn.execute(
            statement, [{"name": n, "private": False, "created_at": now} for n in sorted(names)]
        )

    def _stored(self, index: int, event_id: int) -> BuildEvent:
        return event_from_row(self.event_rows[index] | {"id": event_id})


def _insert_ignore(conn: Connection, table: Table) -> Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no insert-or-ignore for {dialect}")


def _received_at(delivery: Delivery) -> datetime:
    return next((e.received_at for e in delivery.events if e.received_at), None) or utcnow()


def _event_row(event: BuildEvent) -> dict:
    return {
        "provider": event.provider,
        "project": event.project,
        "pipeline": event.pipeline,
        "branch": event.branch,
        "sha": event.sha,
        "author_name": event.author.name,
        "author_email": event.author.email,
        "author_login": event.author.login,
        "build_id": event.build_id,
        "build_number": event.build_number,
        "attempt": event.attempt,
        "status": event.status.value,
        "transition": event.transition.value if event.transition else None,
        "url": event.url,
        "started_at": event.started_at,
        "finished_at": event.finished_at,
        "received_at": event.received_at,
        "delivery_key": event.delivery_key,
    }


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
