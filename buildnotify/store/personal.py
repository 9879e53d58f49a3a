"""Per-developer state (pending alerts, watch and mute settings), claims on
failing builds, and the newest finished state of each branch.

Plain synchronous functions of a connection: the caller owns the transaction
(the hub runs them on its worker threads; all writes go through its single
writer thread, which is why read-then-write upserts are safe here and stay
portable across SQLite and PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from buildnotify.events import BuildEvent, Status, utcnow
from buildnotify.store.rows import event_from_row
from buildnotify.store.schema import alerts, builds, claims, events, watches

#: The finished statuses that say something about the code: a branch's state
#: is its newest run with one of these (docs/webhooks/generic.md: cancelled
#: and skipped runs do not count for or against the branch).
COUNTING_STATUSES = (Status.SUCCESS.value, Status.FAILURE.value, Status.ERROR.value)

# -- alerts ------------------------------------------------------------------------


def pending_alerts(
    conn: Connection, developer_id: int, limit: int | None = None
) -> list[tuple[int, BuildEvent]]:
    """The developer's unacknowledged alerts as (alert id, event), oldest
    event first; the oldest ``limit`` of them if given."""
    query = (
        select(alerts.c.id.label("alert_id"), events)
        .join(events, events.c.id == alerts.c.event_id)
        .where(alerts.c.developer_id == developer_id, alerts.c.acked_at.is_(None))
        .order_by(events.c.id, alerts.c.id)
        .limit(limit)
    )
    return [(row.alert_id, event_from_row(row._mapping)) for row in conn.execute(query)]


def ack_alerts(
    conn: Connection, developer_id: int, alert_ids: Iterable[int], now: datetime | None = None
) -> int:
    """Acknowledge some of the developer's alerts; returns how many were newly
    acknowledged. Ids of other developers' alerts, or unknown ones, are ignored."""
    ids = sorted({int(i) for i in alert_ids})
    if not ids:
        return 0
    result = conn.execute(
        update(alerts)
        .where(alerts.c.developer_id == developer_id, alerts.c.id.in_(ids), alerts.c.acked_at.is_(None))
        .values(acked_at=now or utcnow())
    )
    return result.rowcount


def mark_delivered(conn: Connection, alert_ids: Iterable[int], now: datetime) -> None:
    """The alerts were pushed to an attached client of their developer: they
    will not be escalated (the first push counts)."""
    ids = sorted({int(i) for i in alert_ids})
    if ids:
        conn.execute(
            update(alerts)
            .where(alerts.c.id.in_(ids), alerts.c.delivered_at.is_(None))
            .values(delivered_at=now)
        )


# -- settings ------------------------------------------------------------------------


def settings(conn: Connection, developer_id: int) -> dict[str, dict[str, Any]]:
    """``{project: {"watching": bool, "muted_until": datetime | None}}`` for
    every project the developer has a setting for."""
    query = (
        select(watches.c.project, watches.c.watching, watches.c.muted_until)
        .where(watches.c.developer_id == developer_id)
        .order_by(watches.c.project)
    )
    return {
        row.project: {"watching": bool(row.watching), "muted_until": row.muted_until}
        for row in conn.execute(query)
    }


def set_watching(conn: Connection, developer_id: int, project: str, watching: bool) -> None:
    _upsert_watch(conn, developer_id, project, watching=bool(watching))


def set_muted(conn: Connection, developer_id: int, project: str, until: datetime | None) -> None:
    """Mute ``project`` until ``until`` (an aware datetime), or unmute (None)."""
    _upsert_watch(conn, developer_id, project, muted_until=until)


def _upsert_watch(conn: Connection, developer_id: int, project: str, **values: Any) -> None:
    where = (watches.c.developer_id == developer_id, watches.c.project == project)
    if conn.execute(select(watches.c.id).where(*where)).first() is None:
        row = {"developer_id": developer_id, "project": project, "watching": True, "muted_until": None}
        conn.execute(insert(watches).values(row | values))
    else:
        conn.execute(update(watches).where(*where).values(values))


# -- claims --------------------------------------------------------------------------


def claim(
    conn: Connection,
    project: str,
    pipeline: str,
    branch: str | None,
    developer: str,
    note: str | None,
    now: datetime,
) -> dict[str, Any]:
    """Claim (project, pipeline, branch) for ``developer`` ("I'm on it").

    A target has at most one claim. Claiming a target someone else claimed
    *replaces* their claim rather than failing (whoever is at the keyboard
    now is the better guess), and reports it: the returned claim has a
    ``"replaced"`` key with the previous claim as a dict (None if there was
    none, or if it was the same developer's, whose note and time are simply
    updated). A ``None`` branch is stored as ``""`` and returned as None.
    """
    where = _target(project, pipeline, branch)
    previous = conn.execute(select(claims).where(*where)).first()
    values = {"developer": developer, "note": note, "claimed_at": now}
    if previous is None:
        conn.execute(insert(claims).values(project=project, pipeline=pipeline, branch=branch or "", **values))
    else:
        conn.execute(update(claims).where(*where).values(values))
    replaced = None
    if previous is not None and previous.developer != developer:
        replaced = _claim_dict(previous._mapping)
    return {
        "project": project,
        "pipeline": pipeline,
        "branch": branch or None,
        "developer": developer,
        "note": note,
        "claimed_at": now,
        "replaced": replaced,
    }


def unclaim(
    conn: Connection, project: str, pipeline: str, branch: str | None, developer: str | None = None
) -> bool:
    """Drop the claim on a target (only if it is ``developer``'s, when given);
    False if there was no such claim."""
    where = list(_target(project, pipeline, branch))
    if developer is not None:
        where.append(claims.c.developer == developer)
    return conn.execute(delete(claims).where(*where)).rowcount > 0


def claims_for(conn: Connection, projects: Iterable[str]) -> list[dict[str, Any]]:
    """The claims on the given projects, by project, pipeline and branch."""
    names = sorted(set(projects))
    if not names:
        return []
    query = (
        select(claims)
        .where(claims.c.project.in_(names))
        .order_by(claims.c.project, claims.c.pipeline, claims.c.branch)
    )
    return [_claim_dict(row._mapping) for row in conn.execute(query)]


def clear_claims(conn: Connection, project: str, pipeline: str, branch: str | None) -> list[dict[str, Any]]:
    """Drop the claim on a target (its build is fixed); returns what was dropped."""
    where = _target(project, pipeline, branch)
    cleared = [_claim_dict(row._mapping) for row in conn.execute(select(claims).where(*where))]
    if cleared:
        conn.execute(delete(claims).where(*where))
    return cleared


def _target(project: str, pipeline: str, branch: str | None) -> tuple:
    return (claims.c.project == project, claims.c.pipeline == pipeline, claims.c.branch == (branch or ""))


def _claim_dict(row: Any) -> dict[str, Any]:
    return {
        "project": row["project"],
        "pipeline": row["pipeline"],
        "branch": row["branch"] or None,
        "developer": row["developer"],
        "note": row["note"],
        "claimed_at": row["claimed_at"],
    }


# -- status --------------------------------------------------------------------------


def latest_states(conn: Connection, projects: Iterable[str]) -> list[BuildEvent]:
    """For each (project, pipeline, branch) of ``projects``, the event of its
    newest finished run that counts (highest ``builds.seq`` among runs whose
    newest update is a success, failure or error), ordered by project,
    pipeline and branch (no branch first). Runs still queued or running are
    skipped, and so are cancelled and skipped runs, which say nothing about
    the code: the state shown is the last known outcome."""
    names = sorted(set(projects))
    if not names:
        return []
    rank = (
        func.row_number()
        .over(
            partition_by=(builds.c.project, builds.c.pipeline, builds.c.branch),
            order_by=(builds.c.seq.desc(), builds.c.event_id.desc()),
        )
        .label("rank")
    )
    newest = (
        select(builds.c.event_id, rank)
        .where(
            builds.c.project.in_(names),
            builds.c.status.in_(COUNTING_STATUSES),
            builds.c.event_id.is_not(None),
        )
        .subquery()
    )
    query = (
        select(events)
        .join(newest, newest.c.event_id == events.c.id)
        .where(newest.c.rank == 1)
        .order_by(events.c.project, events.c.pipeline, events.c.branch.is_not(None), events.c.branch)
    )
    return [event_from_row(row._mapping) for row in conn.execute(query)]
