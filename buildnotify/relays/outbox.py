"""The relay outbox in the database (``relay_messages``): enqueue, claim what
is due under a lease, record each attempt's outcome, and what the command
line shows and retries. Plain functions of a connection; the caller owns
the transaction (the hub runs them on its writer thread).

A message is claimed by one node at a time: the claim takes the due rows
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (another node's claim in flight
skips them instead of waiting) and leases them until ``leased_until``. A
node that dies mid-send leaves the lease to run out; the message is then
sent again by whichever node claims it next.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, func, insert, or_, select, update

from buildnotify.store.schema import alerts
from buildnotify.store.schema import relay_messages as messages

PENDING, SENT, DEAD = "pending", "sent", "dead"
STATES = (PENDING, SENT, DEAD)
#: the last error of an escalation dropped because its alert was acked before it was sent
ACKED = "not sent: the alert was acked first"


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A message this node now holds the lease of."""

    id: int
    relay: str
    body: str
    attempts: int
    created_at: datetime


def enqueue(conn: Connection, rows: Iterable[dict[str, Any]], now: datetime) -> None:
    """Add messages (dicts of relay, body, and event_id or alert_id), due now."""
    values = [
        {"event_id": None, "alert_id": None}
        | row
        | {"state": PENDING, "attempts": 0, "next_attempt_at": now, "created_at": now}
        for row in rows
    ]
    if values:
        conn.execute(insert(messages), values)


def claim(
    conn: Connection, node: str, now: datetime, lease: timedelta, limit: int, relays: Collection[str]
) -> list[Claimed]:
    """Lease up to ``limit`` due messages of ``relays`` (those this node can
    send) to ``node`` until ``now + lease``, oldest due first."""
    if not relays:
        return []
    c = messages.c
    acked = exists().where(alerts.c.id == c.alert_id, alerts.c.acked_at.is_not(None))
    conn.execute(  # an escalation not sent yet (its relay failing) whose alert was acked meanwhile
        update(messages)
        .where(
            c.state == PENDING,
            c.alert_id.is_not(None),
            acked,
            or_(c.leased_until.is_(None), c.leased_until <= now),  # not in flight on another node
        )
        .values(state=DEAD, last_error=ACKED, leased_by=None, leased_until=None)
    )
    due = (
        select(c.id)
        .where(
            c.state == PENDING,
            c.next_attempt_at <= now,
            c.relay.in_(sorted(relays)),
            or_(c.leased_until.is_(None), c.leased_until <= now),
        )
        .order_by(c.next_attempt_at, c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # nothing on SQLite, whose one writer needs no lock
    )
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(update(messages).where(c.id.in_(ids)).values(leased_by=node, leased_until=now + lease))
    rows = conn.execute(
        select(c.id, c.relay, c.body, c.attempts, c.created_at).where(c.id.in_(ids)).order_by(c.id)
    )
    return [Claimed(*row) for row in rows]


def sent(conn: Connection, message_id: int, now: datetime) -> bool:
    """The receiver answered 2xx (the mail server took the message)."""
    c = messages.c
    result = conn.execute(
        update(messages)
        .where(c.id == message_id, c.state == PENDING)
        .values(
            state=SENT,
            sent_at=now,
            attempts=c.attempts + 1,
            last_error=None,
            leased_by=None,
            leased_until=None,
        )
    )
    return result.rowcount > 0


def failed(conn: Connection, message_id: int, error: str, next_attempt_at: datetime | None) -> None:
    """An attempt failed: try again at ``next_attempt_at``, or (None) never: dead."""
    c = messages.c
    state = {"state": DEAD} if next_attempt_at is None else {"next_attempt_at": next_attempt_at}
    conn.execute(
        update(messages)
        .where(c.id == message_id, c.state == PENDING)
        .values(attempts=c.attempts + 1, last_error=error, leased_by=None, leased_until=None, **state)
    )


def postpone(conn: Connection, relay: str, until: datetime, now: datetime) -> None:
    """The receiver asked for a pause (429 with Retry-After): the relay's
    other pending messages not leased wait as long."""
    c = messages.c
    conn.execute(
        update(messages)
        .where(
            c.relay == relay,
            c.state == PENDING,
            c.next_attempt_at < until,
            or_(c.leased_until.is_(None), c.leased_until <= now),
        )
        .values(next_attempt_at=until)
    )


def retry(conn: Connection, message_id: int, now: datetime) -> bool:
    """A dead message becomes pending again, due now (``relays retry ID``);
    its give-up time starts again from now. False if there is no dead message ``message_id``."""
    c = messages.c
    result = conn.execute(
        update(messages)
        .where(c.id == message_id, c.state == DEAD)
        .values(state=PENDING, next_attempt_at=now, created_at=now, leased_by=None, leased_until=None)
    )
    return result.rowcount > 0


def counts(conn: Connection, relays: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """``{relay: {"pending": n, "sent": n, "dead": n}}`` for every relay with
    messages, and for each of ``relays`` (the configured ones) in any case."""
    c = messages.c
    found = {relay: dict.fromkeys(STATES, 0) for relay in relays}
    for relay, state, count in conn.execute(
        select(c.relay, c.state, func.count()).group_by(c.relay, c.state).order_by(c.relay)
    ):
        found.setdefault(relay, dict.fromkeys(STATES, 0))[state] = count
    return found


def dead(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """The newest dead messages with their last error."""
    c = messages.c
    query = (
        select(c.id, c.relay, c.event_id, c.alert_id, c.attempts, c.last_error, c.created_at)
        .where(c.state == DEAD)
        .order_by(c.id.desc())
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(query)]


def every(conn: Connection) -> list[dict[str, Any]]:
    """Every message as a dict, oldest first (tests, small outboxes)."""
    return [dict(row._mapping) for row in conn.execute(select(messages).order_by(messages.c.id))]
