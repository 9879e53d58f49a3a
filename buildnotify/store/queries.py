"""Read queries, as plain functions of a connection: the hub runs them on a
thread pool, the CLI calls them directly."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Select, func, select

from buildnotify.events import BuildEvent
from buildnotify.store.rows import event_from_row
from buildnotify.store.schema import events


def history(
    conn: Connection,
    project: str | None = None,
    limit: int = 50,
    after_id: int | None = None,
    projects: Collection[str] | None = None,
    exclude: Collection[str] = (),
    before_id: int | None = None,
) -> list[BuildEvent]:
    """Events newest first (older than ``before_id``, to page back), or (with
    ``after_id``) oldest first from there: the form a resuming client wants.
    ``projects`` keeps only those, ``exclude`` drops those (private projects
    a session may not see)."""
    query = _history_query(project, limit, after_id, projects, exclude, before_id)
    return [event_from_row(row._mapping) for row in conn.execute(query)]


def history_wire(
    conn: Connection,
    project: str | None = None,
    limit: int = 50,
    after_id: int | None = None,
    projects: Collection[str] | None = None,
    exclude: Collection[str] = (),
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """:func:`history` as wire dicts (``BuildEvent.to_dict``), built straight
    from the rows: a catch-up reads thousands, and the detour through
    BuildEvent costs as much as the read."""
    c = events.c
    columns = (c.id, c.provider, c.project, c.pipeline, c.branch, c.sha, c.author_name, c.author_email)
    columns += (c.author_login, c.build_id, c.build_number, c.attempt, c.status, c.transition, c.url)
    columns += (c.started_at, c.finished_at, c.received_at, c.delivery_key)
    query = _history_query(project, limit, after_id, projects, exclude, before_id, columns)
    return [
        {
            "id": id_,
            "provider": provider,
            "project": project_,
            "pipeline": pipeline,
            "branch": branch,
            "sha": sha,
            "author": {"name": name, "email": email, "login": login},
            "build_id": build_id,
            "build_number": build_number,
            "attempt": attempt,
            "status": status,
            "transition": transition or None,
            "url": url,
            "started_at": started.isoformat() if started else None,
            "finished_at": finished.isoformat() if finished else None,
            "received_at": received.isoformat() if received else None,
            "delivery_key": delivery_key,
        }
        for (
            id_,
            provider,
            project_,
            pipeline,
            branch,
            sha,
            name,
            email,
            login,
            build_id,
            build_number,
            attempt,
            status,
            transition,
            url,
            started,
            finished,
            received,
            delivery_key,
        ) in conn.execute(query).all()
    ]


def _history_query(
    project: str | None,
    limit: int,
    after_id: int | None,
    projects: Collection[str] | None,
    exclude: Collection[str],
    before_id: int | None,
    columns: tuple[Any, ...] = (events,),
) -> Select:
    query = select(*columns)
    if project is not None:
        query = query.where(events.c.project == project)
    if projects is not None:
        query = query.where(events.c.project.in_(list(projects)))
    if exclude:
        query = query.where(events.c.project.not_in(list(exclude)))
    if before_id is not None:
        query = query.where(events.c.id < before_id)
    if after_id is not None:
        query = query.where(events.c.id > after_id).order_by(events.c.id)
    else:
        query = query.order_by(events.c.id.desc())
    return query.limit(limit)


def newest_id(conn: Connection) -> int:
    """The newest stored event id (0 when empty)."""
    return conn.execute(select(func.max(events.c.id))).scalar() or 0


def oldest_id(conn: Connection) -> int | None:
    """The oldest stored event id (None when empty): a resume from before it
    has lost pruned events."""
    return conn.execute(select(func.min(events.c.id))).scalar()
