"""The bus of one hub process (the SQLite default): messages go straight
from producer to consumers on the reactor thread."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed

from buildnotify.bus.base import Bus, Message, encode
from buildnotify.metrics import Metrics
from buildnotify.store import Store, queries
from buildnotify.store.batch import Recorded


class LocalBus(Bus):
    def __init__(self, store: Store, node: str = "local", metrics: Metrics | None = None) -> None:
        super().__init__(node, metrics)
        self.store = store
        self._last_message = 0

    async def start(self) -> None:
        self.head = await self.store.read(queries.newest_id)

    def committed(self, recorded: Recorded) -> None:
        self._dispatch_events(recorded.events, recorded.alerts)

    def publish(self, kind: str, body: dict[str, Any]) -> Deferred[Message]:
        self._last_message += 1
        message = Message(self._last_message, kind, json.loads(encode(body)), self.node)
        self._dispatch(message)
        return succeed(message)
