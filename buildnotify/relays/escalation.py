"""Escalation: a personal alert that no attached client of its developer
received within ``[escalation] after`` seconds (the developer is away, or
the tray is not running) goes out once through the relay the developer chose
(``buildnotify-cli users escalate NAME --relay R``). An ack from any client
first, or a push to an attached client, or a mute of the project, keeps it
at home.

``alerts.escalated_at`` is set in the transaction that enqueues the relay
message, by an update that only succeeds while it is still unset (and the
alert still unacked and undelivered): of two nodes checking at once, the
second finds the row changed (PostgreSQL re-checks the condition after the
first commits) and escalates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, and_, exists, select, update
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from buildnotify.events import BuildEvent
from buildnotify.relays import outbox, render
from buildnotify.relays.settings import EscalationSettings, RelaySettings, mailable
from buildnotify.store.accounts import AccountError
from buildnotify.store.rows import event_from_row
from buildnotify.store.schema import alerts, developers, events, identities, watches

log = logging.getLogger("buildnotify.relays")

#: alerts escalated per check at most (the rest wait for the next)
PER_CHECK = 100


def set_relay(conn: Connection, name: str, relay: str | None) -> None:
    """``name``'s alerts escalate through ``relay`` (None: never)."""
    result = conn.execute(update(developers).where(developers.c.name == name).values(escalate_relay=relay))
    if result.rowcount == 0:
        raise AccountError(f"no developer named {name!r}")


def escalate_due(
    conn: Connection, relays: Mapping[str, RelaySettings], settings: EscalationSettings, now: datetime
) -> list[int]:
    """Escalate the alerts due at ``now`` through relays this node has;
    returns the ids of the relay messages enqueued."""
    if not relays:
        return []
    a = alerts.c
    muted = exists().where(
        watches.c.developer_id == a.developer_id,
        watches.c.project == events.c.project,
        watches.c.muted_until > now,
    )
    query = (
        select(
            a.id.label("alert_id"),
            developers.c.id.label("alert_developer_id"),
            developers.c.name.label("developer_name"),
            developers.c.escalate_relay,
            events,
        )
        .join(developers, developers.c.id == a.developer_id)
        .join(events, events.c.id == a.event_id)
        .where(
            _unseen(),
            a.created_at <= now - timedelta(seconds=settings.after),
            a.created_at > now - timedelta(seconds=settings.max_age),
            developers.c.escalate_relay.in_(sorted(relays)),
            ~muted,
        )
        .order_by(a.id)
        .limit(PER_CHECK)
    )
    rows = [row._mapping for row in conn.execute(query)]
    enqueued = []
    for row in rows:
        taken = conn.execute(
            update(alerts).where(a.id == row["alert_id"], _unseen()).values(escalated_at=now)
        ).rowcount
        if not taken:
            continue  # another node escalated it, or a client got or acked it meanwhile
        relay = relays[row["escalate_relay"]]
        event = event_from_row(row)
        to = _recipients(conn, relay, row["alert_developer_id"], event)
        if to is None:
            log.warning(
                "alert %d of %s: relay %s mails the author, who has no usable email address; not escalated",
                row["alert_id"],
                row["developer_name"],
                relay.name,
            )
            continue
        body = render.body(relay, event, to, developer=row["developer_name"])
        outbox.enqueue(
            conn,
            [{"relay": relay.name, "event_id": event.id, "alert_id": row["alert_id"], "body": body}],
            now,
        )
        enqueued.append(row["alert_id"])
    return enqueued


def _unseen() -> Any:
    a = alerts.c
    return and_(a.acked_at.is_(None), a.delivered_at.is_(None), a.escalated_at.is_(None))


def _recipients(
    conn: Connection, relay: RelaySettings, developer_id: int, event: BuildEvent
) -> list[str] | None:
    if relay.kind != "smtp":
        return []
    if not relay.to_author:
        return list(relay.to)
    own = conn.scalar(
        select(identities.c.value)
        .where(identities.c.developer_id == developer_id, identities.c.kind == "email")
        .order_by(identities.c.id)
        .limit(1)
    )
    found = own or event.author.email
    return [found] if mailable(found) else None


class Escalation:
    """Checks for alerts to escalate every ``settings.check_every`` seconds on ``clock``."""

    def __init__(
        self,
        store: Any,
        relays: Mapping[str, RelaySettings],
        settings: EscalationSettings,
        clock: Any,
        escalated: Any = None,
    ) -> None:
        self.store = store
        self.relays = dict(relays)
        self.settings = settings
        self.clock = clock
        self.escalated = escalated  # told after a check that enqueued messages (the sender's wake)
        self._loop = LoopingCall(self._checked)
        self._loop.clock = clock

    def start(self) -> None:
        self._loop.start(self.settings.check_every, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def check(self) -> list[int]:
        """Escalate what is due now; the ids of the alerts escalated."""
        now = datetime.fromtimestamp(self.clock.seconds(), timezone.utc)
        done = await self.store.write(lambda conn: escalate_due(conn, self.relays, self.settings, now))
        if done:
            log.info("escalated %d alert(s) through relays", len(done))
            if self.escalated is not None:
                self.escalated()
        return done

    def _checked(self) -> Deferred[Any]:
        d = Deferred.fromCoroutine(self.check())
        d.addErrback(lambda f: log.error("escalation check failed: %s", f.getErrorMessage()))
        return d
