"""Relays: selected build events and escalated personal alerts sent on to
chat webhooks (Slack-compatible, Discord), signed JSON receivers and mail,
through a durable outbox.

A relay message is written in the transaction that stores its event
(:meth:`RelayService.enqueue`, a store ``after_record`` hook) or escalates
its alert (:mod:`~buildnotify.relays.escalation`), and sent later, off the
ingest path, by :mod:`~buildnotify.relays.sender`: retried with backoff,
given up after a while, never sent again once a 2xx was recorded. Only
server.py and cli.py import this package.
"""

from buildnotify.relays.service import RelayService
from buildnotify.relays.settings import EscalationSettings, RelaySettings, RelaySettingsError

__all__ = ["EscalationSettings", "RelayService", "RelaySettings", "RelaySettingsError"]
