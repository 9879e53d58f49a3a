"""Forgetting old events: what a reconnecting client can still catch up on
is the retention window (``[pb] retention_days``), reported to clients."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, select

from buildnotify.store.schema import access_changes, alerts, builds, deliveries, events


def prune(conn: Connection, cutoff: datetime) -> tuple[int, int]:
    """Delete events and delivery records received before ``cutoff``; keep the
    newest event of every run (``status`` and transitions still need it) and
    events with unacknowledged alerts. Returns (events, deliveries) deleted."""
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
    conn.execute(delete(access_changes).where(access_changes.c.changed_at < cutoff))  # long applied
    return old_events, old_deliveries
