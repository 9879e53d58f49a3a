"""The stream's order when several hub nodes write one PostgreSQL database.

An event's id is its stream position, and a resuming client sends the last
id it saw as ``since``. With several writers a plain sequence breaks that:
``nextval()`` is not transactional, so id 11 may commit before id 10, and a
reader that moved past 11 would skip 10 for ever. So every transaction that
appends to the stream (events, bus messages) first takes one
transaction-scoped advisory lock, and only then draws its ids: the lock is
held until commit, and PostgreSQL makes a commit visible before it releases
the transaction's locks, so ids become visible in increasing order. A reader
that saw id N has seen every id below N, and ``since`` (the last id seen)
never skips or repeats an event. The lock is taken once per group commit, so
its cost is one round trip per batch (bench/ingest.py --database measures it).

The same transaction sends ``NOTIFY`` on the database's channel with only
the kind (``events`` or ``messages``): readers read what is new by id.
SQLite has a single writer and needs none of this.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from buildnotify.alerts import Alert
from buildnotify.events import utcnow
from buildnotify.store import locks, queries
from buildnotify.store.schema import alerts, bus_messages, developers, events

#: what a notification says is new: events, bus messages, or access changes
#: (written by the account commands, which may run in another process)
EVENTS = "events"
MESSAGES = "messages"
ACCESS = "access"


#: one round trip: the lock (held until commit), then the notification
_APPEND = text("select pg_advisory_xact_lock(:key), pg_notify(:channel, :kind)")


@dataclasses.dataclass(frozen=True)
class Stream:
    """The lock and channel of one database schema (tests give each test a
    schema of its own in one database, so both are named after it)."""

    channel: str
    lock_key: int

    @classmethod
    def of(cls, conn: Connection) -> Stream:
        schema = locks.schema(conn)
        return cls(channel=f"buildnotify.{schema}"[:63], lock_key=locks.key(schema, locks.STREAM))

    def append(self, conn: Connection, kind: str) -> None:
        """Call before drawing stream ids in a transaction: orders the commit
        and tells every listening node once it is visible."""
        conn.execute(_APPEND, {"key": self.lock_key, "channel": self.channel, "kind": kind})


def send(conn: Connection, kind: str, node: str, body: str) -> int:
    """Append a bus message; returns its id. Its id is drawn from the events'
    sequence: one order for events and messages, so a node hands on a mute
    before the events committed after it, as the node that made it does."""
    return conn.execute(
        insert(bus_messages)
        .values(
            id=func.nextval(func.pg_get_serial_sequence(events.name, "id")),
            kind=kind,
            node=node,
            body=body,
            sent_at=utcnow(),
        )
        .returning(bus_messages.c.id)
    ).scalar_one()


def messages_after(conn: Connection, after_id: int, limit: int) -> list[Any]:
    """Bus messages after ``after_id``, oldest first: rows of (id, kind, node, body)."""
    query = (
        select(bus_messages.c.id, bus_messages.c.kind, bus_messages.c.node, bus_messages.c.body)
        .where(bus_messages.c.id > after_id)
        .order_by(bus_messages.c.id)
        .limit(limit)
    )
    return list(conn.execute(query))


def newest_message_id(conn: Connection) -> int:
    return conn.execute(select(func.max(bus_messages.c.id))).scalar() or 0


def events_after(conn: Connection, after_id: int, limit: int) -> tuple[list[Any], list[Alert]]:
    """The next ``limit`` events after ``after_id`` with the alerts committed
    with them (what a node that did not write them pushes)."""
    found_events = queries.history(conn, after_id=after_id, limit=limit)
    if not found_events:
        return [], []
    by_id = {event.id: event for event in found_events}
    query = (
        select(alerts.c.id, developers.c.name, alerts.c.event_id)
        .join(developers, developers.c.id == alerts.c.developer_id)
        .where(alerts.c.event_id.in_(list(by_id)))
        .order_by(alerts.c.id)
    )
    found = [Alert(alert_id, name, by_id[event_id]) for alert_id, name, event_id in conn.execute(query)]
    return found_events, found
