"""Pruning old events keeps what status, alerts and transitions still need."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func, select
from twisted.internet import reactor

from buildnotify.events import Author, Status
from buildnotify.store import Store, accounts, retention
from buildnotify.store.schema import deliveries
from tests.support import database_url, per_backend
from tests.test_store import T0, build, delivery


class RetentionTests:
    backend = "sqlite"

    def setUp(self) -> None:
        self.store = Store.open(database_url(self, self.backend), reactor)
        self.addCleanup(self.store.stop)

    async def test_prune_forgets_old_events_but_keeps_what_is_still_needed(self) -> None:
        def alice(conn: object) -> None:
            accounts.add_developer(conn, "alice", emails=["alice@example.com"])

        await self.store.write(alice)
        old_run = [build(1, Status.RUNNING), build(1, Status.SUCCESS)]  # the run's newest event stays
        alerting = build(2, Status.FAILURE, author=Author(email="alice@example.com"))  # pending alert stays
        for event in [*old_run, alerting]:
            await self.store.record(delivery(event))
        newer = await self.store.record(
            delivery(build(100, Status.SUCCESS).replace(received_at=T0 + timedelta(days=60)))
        )
        cutoff = T0 + timedelta(days=30)
        pruned = await self.store.write(lambda conn: retention.prune(conn, cutoff))
        left = await self.store.history(after_id=0)
        self.assertEqual(pruned[0], 1)  # only the old "running" update
        self.assertEqual(
            [(e.build_number, e.status.value) for e in left],
            [(1, "success"), (2, "failure"), (100, "success")],
        )
        self.assertEqual(left[-1].id, newer.events[0].id)
        with self.store.engine.connect() as conn:
            self.assertEqual(conn.execute(select(func.count()).select_from(deliveries)).scalar(), 1)
        # Transitions still see the pruned branch's last outcome.
        after = await self.store.record(
            delivery(build(101, Status.FAILURE).replace(received_at=T0 + timedelta(days=61)))
        )
        self.assertEqual(after.events[0].transition.value, "failed")


per_backend(RetentionTests, globals())


class RelayRetentionTests:
    backend = "sqlite"

    def setUp(self) -> None:
        self.store = Store.open(database_url(self, self.backend), reactor)
        self.addCleanup(self.store.stop)

    async def test_sent_and_dead_relay_messages_go_with_old_events_pending_ones_stay(self) -> None:
        from buildnotify.relays import outbox

        def write(conn: object) -> None:
            """Old messages named after their state, and a recent sent one."""
            outbox.enqueue(conn, [{"relay": state, "body": "{}"} for state in outbox.STATES], T0)
            outbox.enqueue(conn, [{"relay": "recent", "body": "{}"}], T0 + timedelta(days=60))
            states = outbox.messages.c.relay
            conn.execute(
                outbox.messages.update().values(state=case((states == "recent", "sent"), else_=states))
            )

        await self.store.write(write)
        await self.store.write(lambda conn: retention.prune(conn, T0 + timedelta(days=30)))
        left = await self.store.read(outbox.every)
        self.assertEqual(sorted(m["relay"] for m in left), ["pending", "recent"])


per_backend(RelayRetentionTests, globals())
