"""Forgetting old events: what a reconnecting client can still catch up on
is the retention window (``[pb] retention_days``), reported to clients."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, select

from buildnotify.events import utcnow
from buildnotify.store import locks
from buildnotify.store.schema import (
    access_changes,
    alerts,
    builds,
    bus_messages,
    deliveries,
    events,
    relay_messages,
)

#: how long bus messages are kept: nodes read them within seconds
MESSAGES_KEPT = timedelta(days=1)


def prune(conn: Connection, cutoff: datetime) -> tuple[int, int]:
    """Delete events and delivery records received before ``cutoff``; keep the
    newest event of every run (``status`` and transitions still need it) and
    events with unacknowledged alerts. Relay messages sent or dead before
    ``cutoff`` go too (pending ones stay until sent or given up). Returns (events, deliveries) deleted.
    With several nodes on PostgreSQL one prunes at a time; the others skip
    (and report nothing deleted)."""
    if conn.dialect.name == "postgresql" and not locks.try_transaction_lock(conn, locks.PRUNER):
        return 0, 0
    keep = select(builds.c.event_id).where(builds.c.event_id.is_not(None))
    pending = select(alerts.c.event_id).where(alerts.c.acked_at.is_(None))
    old_events = conn.execute(
        delete(events).where(
            events.c.received_at < cutoff, events.c.id.not_in(keep), events.c.id.not_in(pending)
        )
    ).rowcount
    conn.execute(
        delete(alerts).where(alerts.c.acked_at.is_not(None), alerts.c.event_id.not_in(select(events.c.id)))
    )
    old_deliveries = conn.execute(delete(deliveries).where(deliveries.c.received_at < cutoff)).rowcount
    conn.execute(
        delete(relay_messages).where(
            relay_messages.c.state.in_(("sent", "dead")), relay_messages.c.created_at < cutoff
        )
    )
    conn.execute(delete(access_changes).where(access_changes.c.changed_at < cutoff))  # long applied
    conn.execute(delete(bus_messages).where(bus_messages.c.sent_at < utcnow() - MESSAGES_KEPT))
    return old_events, old_deliveries
