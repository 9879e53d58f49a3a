"""Read queries, as plain functions of a connection: the hub runs them on a
thread pool, the CLI calls them directly."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, func, select

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
    query = select(events)
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
    return [event_from_row(row._mapping) for row in conn.execute(query.limit(limit))]


def newest_id(conn: Connection) -> int:
    """The newest stored event id (0 when empty)."""
    return conn.execute(select(func.max(events.c.id))).scalar() or 0


def oldest_id(conn: Connection) -> int | None:
    """The oldest stored event id (None when empty): a resume from before it
    has lost pruned events."""
    return conn.execute(select(func.min(events.c.id))).scalar()
