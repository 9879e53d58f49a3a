"""The relays of one hub node, wired together: the enqueue hook the store
runs in the transaction that stores events, the sender, and the escalation
check. server.py builds one from the config's ``[relays]`` and
``[escalation]`` tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from buildnotify.events import BuildEvent
from buildnotify.relays import outbox, render
from buildnotify.relays.escalation import Escalation
from buildnotify.relays.sender import Counted, RelaySender
from buildnotify.relays.settings import (
    EscalationSettings,
    RelaySettings,
    mailable,
    parse_escalation,
    parse_relays,
)

log = logging.getLogger("buildnotify.relays")


class RelayService:
    def __init__(
        self,
        store: Any,
        relays: Mapping[str, RelaySettings],
        escalation: EscalationSettings,
        node: str,
        reactor: Any,
        clock: Any = None,
        counted: Counted | None = None,
    ) -> None:
        """``clock`` (default: the reactor) dates the messages and runs the
        sender's polling and the escalation check; tests pass a ``task.Clock``.
        ``counted(relay, outcome)`` is told of every attempt's outcome."""
        self.store = store
        self.relays = dict(relays)
        self.clock = clock or reactor
        self.sender = RelaySender(store, self.relays, node, reactor, self.clock, counted=counted)
        self.escalation = Escalation(store, self.relays, escalation, self.clock, escalated=self.sender.wake)

    @classmethod
    def from_tables(
        cls,
        store: Any,
        relays: Mapping[str, Any],
        escalation: Mapping[str, Any],
        node: str,
        reactor: Any,
        clock: Any = None,
        counted: Counted | None = None,
    ) -> RelayService:
        """From the config's raw tables (raises RelaySettingsError)."""
        return cls(store, parse_relays(relays), parse_escalation(escalation), node, reactor, clock, counted)

    def start(self) -> None:
        """Enqueue with every stored event from now on; send; escalate."""
        if not self.relays:
            return
        self.store.after_record.append(self.enqueue)
        self.sender.start()
        self.escalation.start()
        log.info("relays: %s", ", ".join(f"{r.name} ({r.kind})" for r in self.relays.values()))

    async def stop(self) -> None:
        if self.enqueue in self.store.after_record:
            self.store.after_record.remove(self.enqueue)
        self.escalation.stop()
        await self.sender.stop()

    def enqueue(self, conn: Connection, stored: Sequence[BuildEvent]) -> None:
        """The store's ``after_record`` hook, inside the transaction that
        stored ``stored``: one message per relay that selects an event. A
        message that cannot be rendered is logged and left out rather than
        failing the webhook (its event is what must be stored)."""
        now = self.sender.now()
        rows = []
        for relay in self.relays.values():
            for event in stored:
                if not relay.selects(event):
                    continue
                try:
                    to = list(relay.to) if not relay.to_author else [event.author.email]
                    if relay.kind == "smtp" and relay.to_author and not mailable(event.author.email):
                        continue  # no author email, or not one plain address (a webhook's word)
                    rows.append(
                        {"relay": relay.name, "event_id": event.id, "body": render.body(relay, event, to)}
                    )
                except Exception:
                    log.exception("relay %s: could not render event %s", relay.name, event.id)
        outbox.enqueue(conn, rows, now)
