"""The bus of one hub process (the SQLite default): messages go straight
from producer to consumers on the reactor thread."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection
from twisted.internet.defer import Deferred, succeed

from buildnotify.bus.base import Bus, Message, T, encode
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

    def write_and_publish(
        self, kind: str, operation: Callable[[Connection], tuple[T, dict[str, Any] | None]]
    ) -> Deferred[T]:
        # one writer, and the callbacks of its commits run in commit order:
        # publishing after the commit keeps the order of the writes
        def publish(outcome: tuple[T, dict[str, Any] | None]) -> T:
            result, body = outcome
            if body is not None:
                self.publish(kind, body)
            return result

        return self.store.write(operation).addCallback(publish)
