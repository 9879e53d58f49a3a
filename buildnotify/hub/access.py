"""Access taken away takes effect at once.

The account commands (``users``, ``projects``) run in another process and
record every change of who may see what in the store's ``access_changes``
(in the same transaction as the change). :class:`AccessWatch` reads what is
new every ``interval`` seconds and hands it to the service, which ends the
sessions of a removed developer or a replaced token and takes a project
away from sessions that may no longer see it. Several hub nodes share the
same table, so each learns of every change, whichever process made it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from buildnotify.store import Store, accounts
from buildnotify.store.accounts import AccessChange

log = logging.getLogger("buildnotify.pb")


class AccessWatch:
    """Polls for access changes and calls ``apply(changes)`` on the reactor
    thread with each new batch, oldest first."""

    def __init__(
        self, store: Store, clock: Any, interval: float, apply: Callable[[Sequence[AccessChange]], None]
    ) -> None:
        self.store = store
        self.apply = apply
        self.last_id = 0
        self._loop = LoopingCall(self.poll)
        self._loop.clock = clock
        self._interval = interval
        self._polling: Deferred[None] | None = None

    async def start(self) -> None:
        """Start after the changes made so far: sessions start after them too."""
        self.last_id = await self.store.read(accounts.last_change_id)
        self._loop.start(self._interval, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def poll(self) -> None:
        if self._polling is None:  # else the previous read is still out (a slow database)
            polling = Deferred.fromCoroutine(self._poll())
            if not polling.called:  # a read that failed at once has cleared _polling already
                self._polling = polling

    async def _poll(self) -> None:
        try:
            changes = await self.store.read(accounts.changes_after, after_id=self.last_id)
            if changes:
                self.last_id = changes[-1].id
                self.apply(changes)
        except Exception as e:  # the database is away: try again next time
            log.warning("could not read access changes: %s", e)
        finally:
            self._polling = None
