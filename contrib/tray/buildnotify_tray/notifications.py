"""What the tray's balloons say: one :class:`Notification` per piece of
news, several of them arriving together shown as one :class:`Message`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Notification:
    kind: str  # failed, fixed, alert, claim, released, goodbye, stopped, refused
    title: str
    body: str
    url: str | None = None
    event_id: int | None = None
    urgent: bool = False


@dataclasses.dataclass(frozen=True)
class Message:
    """What one tray balloon shows."""

    title: str
    body: str
    urgent: bool
    url: str | None


def without_duplicates(pending: list[Notification]) -> list[Notification]:
    """An alert about an event makes the plain notification of that event
    redundant (the hub pushes the event first, then the alert): only the
    alert is kept."""
    alerted = {n.event_id for n in pending if n.kind == "alert" and n.event_id is not None}
    return [n for n in pending if n.kind == "alert" or n.event_id not in alerted]


def summarize(notifications: list[Notification]) -> Message | None:
    """One balloon for a batch: the notification itself, or a count with one
    line each (most urgent first)."""
    if not notifications:
        return None
    if len(notifications) == 1:
        n = notifications[0]
        return Message(n.title, n.body, n.urgent, n.url)
    ordered = sorted(notifications, key=lambda n: (not n.urgent, n.kind != "alert"))
    urgent = any(n.urgent for n in notifications)
    first_url = next((n.url for n in ordered if n.url), None)
    return Message(
        f"{len(notifications)} build updates", "\n".join(n.title for n in ordered), urgent, first_url
    )
