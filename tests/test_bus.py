"""The bus, one suite for both implementations: the in-process bus of one
hub (SQLite) and PostgreSQL LISTEN/NOTIFY between nodes. Then what only
several nodes have: two nodes on one database hear each other, in stream
order, and a node whose connection is killed catches up."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import text
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from buildnotify.bus import Bus, Message
from buildnotify.bus.local import LocalBus
from buildnotify.bus.postgres import PostgresBus
from buildnotify.events import Status
from buildnotify.store import Store, stream
from buildnotify.store.batch import record_batch
from tests.pbclient import missing_events, wait_until
from tests.support import database_url, per_backend
from tests.test_store import build, delivery


def open_node(testcase: unittest.TestCase, url: str, node: str, **bus_options: Any) -> tuple[Store, Bus]:
    """A store and its bus, as the server wires them, stopped after the test."""
    store = Store.open(url, reactor)
    bus: Bus = PostgresBus(store, node, **bus_options) if store.shared else LocalBus(store, node)
    store.on_commit = bus.committed
    testcase.addCleanup(store.stop)
    testcase.addCleanup(bus.stop)
    return store, bus


class BusTests:
    backend = "sqlite"

    async def asyncSetUp(self) -> None:  # noqa: N802 - called from setUp's Deferred
        self.url = database_url(self, self.backend)
        self.store, self.bus = open_node(self, self.url, "node1")
        await self.bus.start()

    def setUp(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self.asyncSetUp())

    async def test_listeners_hear_each_committed_event_once_in_order(self) -> None:
        heard: list[int] = []
        self.bus.subscribe_events(lambda events, _alerts: heard.extend(e.id for e in events))
        first = await self.store.record(delivery(build(1, Status.FAILURE), key="once"))
        await self.store.record(delivery(build(1, Status.FAILURE), key="once"))  # a redelivery: stored once
        second = await self.store.record(delivery(build(2, Status.SUCCESS)))
        expected = [first.events[0].id, second.events[0].id]
        await wait_until(lambda: len(heard) >= 2, what=missing_events(expected, heard))
        self.assertEqual(heard, expected)
        self.assertEqual(self.bus.head, expected[-1])

    async def test_a_listener_that_raises_keeps_no_one_from_the_events(self) -> None:
        heard: list[int] = []

        def broken(_events: object, _alerts: object) -> None:
            raise RuntimeError("listener bug")

        self.bus.subscribe_events(broken)
        self.bus.subscribe_events(lambda events, _alerts: heard.extend(e.id for e in events))
        with self.assertLogs("buildnotify.bus", "ERROR") as logged:
            recorded = await self.store.record(delivery(build(1, Status.FAILURE)))  # still succeeds
            await wait_until(
                lambda: heard == [recorded.events[0].id], what="the event at the second listener"
            )
        self.assertIn("listener bug", "\n".join(logged.output))

    async def test_messages_reach_the_consumers_of_their_kind(self) -> None:
        claims: list[Message] = []
        mutes: list[Message] = []
        self.bus.subscribe("claim", claims.append)
        self.bus.subscribe("mute", mutes.append)
        sent = await self.bus.publish("claim", {"project": "acme/widget", "state": "claimed"})
        await self.bus.publish("claim", {"project": "acme/widget", "state": "released"})
        await wait_until(lambda: len(claims) == 2, what="both claim messages")
        self.assertEqual(mutes, [])
        self.assertEqual([m.body["state"] for m in claims], ["claimed", "released"])
        self.assertEqual(claims[0], sent)
        self.assertEqual(claims[0].node, "node1")
        self.assertLess(claims[0].id, claims[1].id)

    async def test_a_write_and_its_message_are_one(self) -> None:
        """What write_and_publish's operation returns is its result; its body
        (if any) reaches the consumers, committed with the write."""
        claims: list[Message] = []
        self.bus.subscribe("claim", claims.append)
        stored = await self.bus.write_and_publish("claim", lambda conn: (_events(conn), {"said": 1}))
        self.assertEqual(stored, 0)
        self.assertIsNone(await self.bus.write_and_publish("claim", lambda conn: (None, None)))
        await self.bus.publish("claim", {"said": 2})
        await wait_until(lambda: len(claims) == 2, what="both messages")
        self.assertEqual([m.body for m in claims], [{"said": 1}, {"said": 2}])

    async def test_a_consumer_that_raises_breaks_neither_producer_nor_others(self) -> None:
        heard: list[Message] = []

        def broken(_message: Message) -> None:
            raise RuntimeError("consumer bug")

        self.bus.subscribe("kick", broken)
        self.bus.subscribe("kick", heard.append)
        with self.assertLogs("buildnotify.bus", "ERROR") as logged:
            await self.bus.publish("kick", {"developer": "alice"})  # does not fail
            await wait_until(lambda: len(heard) == 1, what="the message at the second consumer")
        self.assertIn("consumer bug", "\n".join(logged.output))

    async def test_an_unsubscribed_consumer_hears_nothing_more(self) -> None:
        heard: list[Message] = []
        stop = self.bus.subscribe("mute", heard.append)
        await self.bus.publish("mute", {"n": 1})
        await wait_until(lambda: len(heard) == 1, what="the first message")
        stop()
        await self.bus.publish("mute", {"n": 2})
        marker: list[Message] = []
        self.bus.subscribe("mute", marker.append)
        await self.bus.publish("mute", {"n": 3})
        await wait_until(lambda: marker and marker[-1].body["n"] == 3, what="the marker message")
        self.assertEqual([m.body["n"] for m in heard], [1])

    def test_bodies_are_plain_data(self) -> None:
        """What could not cross to another node is refused on one too."""
        with self.assertRaises(TypeError):
            self.bus.publish("mute", {"until": datetime.now(timezone.utc)})

    async def test_it_starts_after_what_is_stored(self) -> None:
        recorded = await self.store.record(delivery(build(1, Status.FAILURE)))
        await self.bus.publish("claim", {"n": 1})
        _, later = open_node(self, self.url, "node2") if self.backend == "postgresql" else (None, None)
        if later is None:  # one process owns a SQLite file: restart its bus
            later = LocalBus(self.store, "node1")
        heard: list[Any] = []
        later.subscribe_events(lambda events, _alerts: heard.extend(events))
        later.subscribe("claim", heard.append)
        await later.start()
        self.assertEqual(later.head, recorded.events[0].id)
        self.assertEqual(heard, [])


def _events(conn: Any) -> int:
    return conn.execute(text("select count(*) from events")).scalar_one()


per_backend(BusTests, globals())


class SeveralNodesTests(unittest.TestCase):
    """Two nodes on one PostgreSQL database."""

    async def start_nodes(self, count: int = 2, **bus_options: Any) -> list[tuple[Store, Bus]]:
        url = database_url(self, "postgresql")
        nodes = [open_node(self, url, f"node{n + 1}", **bus_options) for n in range(count)]
        for _, bus in nodes:
            await bus.start()
        return nodes

    async def test_each_node_hears_the_others_events_and_messages(self) -> None:
        (store1, bus1), (store2, bus2) = await self.start_nodes()
        heard: dict[str, list[Any]] = {"node1": [], "node2": []}
        for name, bus in (("node1", bus1), ("node2", bus2)):
            bus.subscribe_events(lambda events, _alerts, name=name: heard[name].extend(e.id for e in events))
            bus.subscribe("claim", lambda message, name=name: heard[name].append(message.node))
        one = await store1.record(delivery(build(1, Status.FAILURE)))
        two = await store2.record(delivery(build(2, Status.SUCCESS)))
        await bus2.publish("claim", {"project": "acme/widget"})
        expected = [one.events[0].id, two.events[0].id, "node2"]
        for name in heard:
            await wait_until(lambda name=name: len(heard[name]) == 3, what=f"{name} to hear all three")
            self.assertEqual(heard[name], expected)

    async def test_concurrent_writers_are_heard_in_stream_order_exactly_once(self) -> None:
        """Ids are drawn under the stream lock, so no node ever reads past an
        id that commits later: every node hears every event once, ascending."""
        nodes = await self.start_nodes(3)
        heard: list[list[int]] = [[] for _ in nodes]
        for seen, (_, bus) in zip(heard, nodes, strict=True):
            bus.subscribe_events(lambda events, _alerts, seen=seen: seen.extend(e.id for e in events))
        rng = random.Random(20261130)
        writes = [
            nodes[rng.randrange(3)][0].record(
                delivery(build(n, Status.FAILURE, build_id=f"b{n}", pipeline=f"p{n % 7}"))
            )
            for n in range(300)
        ]
        recorded = await gatherResults(writes)
        expected = sorted(r.events[0].id for r in recorded)
        for seen in heard:
            await wait_until(
                lambda seen=seen: len(seen) >= len(expected), what=missing_events(expected, seen)
            )
            self.assertEqual(seen, expected)

    async def test_no_reader_passes_an_id_that_commits_later(self) -> None:
        """node1 draws an id and holds its transaction open; node2 records an
        event meanwhile. node2 must wait for the stream lock, or a reader would
        hear node2's higher id first and skip node1's for ever."""
        (store1, bus1), (store2, _) = await self.start_nodes()
        heard: list[int] = []
        bus1.subscribe_events(lambda events, _alerts: heard.extend(e.id for e in events))
        drawn, release = threading.Event(), threading.Event()

        def slow_commit(conn: Any) -> int:
            store1.stream.append(conn, stream.EVENTS)  # type: ignore[union-attr]
            [recorded] = record_batch(conn, [delivery(build(1, Status.FAILURE))])
            drawn.set()
            release.wait(30)
            return recorded.events[0].id

        first = store1.write(slow_commit)
        await deferToThread(drawn.wait, 30)
        second = store2.record(delivery(build(2, Status.FAILURE, project="other/thing")))
        waiting = (
            "select count(*) from pg_locks where locktype = 'advisory' and not granted"
            " and database = (select oid from pg_database where datname = current_database())"
        )
        blocked: list[int] = [0]

        async def node2_blocked() -> None:
            blocked[0] = await store1.read(lambda conn: conn.execute(text(waiting)).scalar_one())

        while not (second.called or blocked[0]):
            await node2_blocked()
        release.set()
        expected = sorted([await first, (await second).events[0].id])
        await wait_until(lambda: len(heard) >= 2, what=missing_events(expected, heard))
        self.assertEqual(heard, expected)

    async def test_a_node_whose_connection_is_killed_catches_up(self) -> None:
        """pg_terminate_backend on the LISTEN connection: the node reconnects
        and reads what was committed meanwhile (the slow poll is off here)."""
        (store1, bus1), (_, bus2) = await self.start_nodes(poll=3600.0)
        heard: list[int] = []
        bus2.subscribe_events(lambda events, _alerts: heard.extend(e.id for e in events))
        await wait_until(bus2.connected.is_set, what="node2 to listen")

        def kill_listeners(conn: Any) -> int:
            return conn.execute(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity"
                    " where query like 'LISTEN%' and datname = current_database() and pid <> pg_backend_pid()"
                    " and query like :channel"
                ),
                {"channel": f'%"{bus2.stream.channel}"%'},  # type: ignore[attr-defined]
            ).scalar_one()

        self.assertEqual(await store1.write(kill_listeners), 2)  # both nodes' listeners
        recorded = [
            await store1.record(delivery(build(n, Status.FAILURE, build_id=f"k{n}"))) for n in range(5)
        ]
        expected = [r.events[0].id for r in recorded]
        await wait_until(lambda: heard == expected, what=missing_events(expected, heard))
        self.flushLoggedErrors()

    async def test_a_stopped_bus_hands_nothing_on(self) -> None:
        """The hub stops the bus before the store: a commit meanwhile (the
        writer finishing its queue) must not start a read or a dispatch."""
        (store1, bus1), _ = await self.start_nodes(poll=3600.0)
        heard: list[int] = []
        bus1.subscribe_events(lambda events, _alerts: heard.extend(e.id for e in events))
        bus1.stop()
        await store1.record(delivery(build(1, Status.FAILURE)))
        bus1.poke()
        await deferLater(reactor, 0.3, lambda: None)
        self.assertEqual(heard, [])

    async def test_a_listen_connection_lost_at_once_is_retried_with_backoff(self) -> None:
        """A connection that LISTENs but fails on its first wait (psycopg
        without notifies(timeout=...), a proxy that drops it) must not make
        the thread reconnect in a loop, flooding the log and the database."""
        url = database_url(self, "postgresql")
        store, bus = open_node(self, url, "node1", poll=3600.0)
        connects: list[float] = []

        class Broken:
            def notifies(self, timeout: float) -> Any:
                raise TypeError("notifies() got an unexpected keyword argument 'timeout'")

            def close(self) -> None:
                pass

        def connect() -> Broken:
            connects.append(1)
            return Broken()

        bus._connect = connect  # type: ignore[attr-defined]
        with self.assertLogs("buildnotify.bus", "WARNING"):
            await bus.start()
            await deferLater(reactor, 1.2, lambda: None)
        self.assertLessEqual(len(connects), 3)
        self.assertGreaterEqual(len(connects), 2)
