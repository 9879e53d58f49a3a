"""Several hub nodes on one PostgreSQL database behave as one hub: each node
here is a whole hub (webhooks, store, bus, PB service on loopback ports) in
this process, all sharing one database. What a client on one node sees does
not depend on which node the webhook, the claim or the mute went to."""

from __future__ import annotations

import random
import secrets
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import text
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.spread import pb
from twisted.trial import unittest

from buildnotify.config import PBSettings
from buildnotify.store import database, personal, retention
from tests.pbclient import Client, RecordingMind, add_developer, delivered, missing_events, wait_until
from tests.support import RunningHub, database_url

AUTHOR = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


class NodesTestCase(unittest.TestCase):
    async def start_nodes(self, count: int = 2, **settings: Any) -> list[RunningHub]:
        url = database_url(self, "postgresql")
        run = secrets.token_hex(3)  # names this test's connections (pg_stat_activity)
        self.nodes = [
            await RunningHub.start(
                self, "postgresql", database=url, node=f"node{n + 1}.{run}", session=PBSettings(**settings)
            )
            for n in range(count)
        ]
        self.store = self.nodes[0].hub.store
        return self.nodes

    async def observer(self, node: RunningHub, projects: list[str], since: int | None = None) -> Any:
        mind = RecordingMind()
        client = await Client.connect(self, node.hub.pb_address)
        perspective = await client.anonymous(mind)
        answer = await perspective.callRemote("watch", projects, since)
        return mind, perspective, client, answer

    async def login(self, node: RunningHub, name: str, token: str, mind: Any = None) -> Any:
        client = await Client.connect(self, node.hub.pb_address)
        return client, await client.login(name, token, mind)


class OneHubTests(NodesTestCase):
    async def test_events_posted_to_one_node_reach_observers_on_all(self) -> None:
        nodes = await self.start_nodes(3)
        watching = [await self.observer(node, ["acme/widget"]) for node in nodes]
        ids = [
            await nodes[n % 3].build("acme/widget", n, "failure" if n % 2 else "success") for n in range(6)
        ]
        for n, (mind, *_rest) in enumerate(watching):
            await wait_until(
                lambda mind=mind: len(mind.events) >= len(ids), what=missing_events(ids, mind.event_ids)
            )
            self.assertEqual(mind.event_ids, ids, f"observer on node{n + 1}")

    async def test_claims_and_their_release_and_clearing_are_seen_on_every_node(self) -> None:
        one, two = await self.start_nodes()
        token = await add_developer(self.store, "alice")
        watcher, _ref, *_ = await self.observer(two, ["acme/widget"])
        await one.build("acme/widget", 1, "failure")
        _, alice = await self.login(one, "alice", token)  # clientless: claims only
        await alice.callRemote("claim", "acme/widget", "ci", "main", "on it")
        await alice.callRemote("unclaim", "acme/widget", "ci", "main")
        await alice.callRemote("claim", "acme/widget", "ci", "main", "back on it")
        await two.build("acme/widget", 2, "success")  # the fix, posted to the other node
        await wait_until(lambda: len(watcher.claims) == 4, what="claimed, released, claimed, cleared")
        self.assertEqual(
            [(c["state"], c.get("note")) for c in watcher.claims],
            [
                ("claimed", "on it"),
                ("released", "on it"),
                ("claimed", "back on it"),
                ("cleared", "back on it"),
            ],
        )
        late, *_ = await self.observer(one, ["acme/widget"])
        await one.build("acme/widget", 3, "failure")
        await alice.callRemote("claim", "acme/widget", "ci", "main")
        await wait_until(lambda: late.claims, what="the claim at a later observer on node1")

    async def test_claims_racing_on_two_nodes_end_as_the_database_has_them(self) -> None:
        """alice claims on node1, bob takes the claim over on node2 while node1
        is slow to tell the others (its reactor busy, its writer queue long):
        every node must end showing bob's claim, as stored, not alice's."""
        one, two = await self.start_nodes()
        alice_token = await add_developer(self.store, "alice")
        bob_token = await add_developer(self.store, "bob")
        observers = [await self.observer(node, ["acme/widget"]) for node in (one, two)]  # kept
        await one.build("acme/widget", 1, "failure")
        _, alice = await self.login(one, "alice", alice_token)  # clientless: claims only
        _, bob = await self.login(two, "bob", bob_token)
        slow = Deferred()
        publish = one.hub.bus.publish

        def slow_publish(kind: str, body: dict[str, Any]) -> Deferred:
            if kind != "claim":
                return publish(kind, body)
            return slow.addCallback(lambda _: publish(kind, body))

        one.hub.bus.publish = slow_publish  # type: ignore[method-assign]
        first = alice.callRemote("claim", "acme/widget", "ci", "main", "alice's")
        stored = lambda: self.store.read(personal.claims_for, projects=["acme/widget"])  # noqa: E731
        while not [c for c in await stored() if c["developer"] == "alice"] and not first.called:
            await deferLater(reactor, 0.01, lambda: None)
        await bob.callRemote("claim", "acme/widget", "ci", "main", "bob's")
        slow.callback(None)
        await first
        [claim] = await stored()
        self.assertEqual(claim["developer"], "bob")
        for n, (watcher, *_kept) in enumerate(observers):
            await wait_until(lambda w=watcher: len(w.claims) >= 2, what=f"both claims on node{n + 1}")
            await delivered(_kept[0])
            self.assertEqual(watcher.claims[-1]["developer"], "bob", f"the claim shown on node{n + 1}")
            late = await self.observer((one, two)[n], ["acme/widget"])
            self.assertEqual([c["developer"] for c in late[3]["claims"]], ["bob"], f"node{n + 1}'s rooms")

    async def test_a_mute_made_on_one_node_applies_on_the_other(self) -> None:
        one, two = await self.start_nodes()
        token = await add_developer(self.store, "alice")
        mind = RecordingMind()
        _, watching = await self.login(one, "alice", token, mind)
        await watching.callRemote("watch", ["acme/widget"])
        _, settings = await self.login(two, "alice", token)  # clientless, on the other node
        await settings.callRemote("mute", "acme/widget")
        await one.build("acme/widget", 1, "failure")
        await delivered(watching)
        self.assertEqual(mind.events, [])
        self.assertNotIn("alice", two.hub.service.mutes, "node2 holds no observer of alice's: no mutes kept")
        await settings.callRemote("unmute", "acme/widget")
        after = await two.build("acme/widget", 2, "failure")
        await wait_until(lambda: mind.events, what=f"event {after} once unmuted")
        self.assertEqual(mind.event_ids, [after])


class SingleClientTests(NodesTestCase):
    async def test_kick_old_says_goodbye_on_the_node_holding_the_old_client(self) -> None:
        one, two = await self.start_nodes(grace=0.2)
        token = await add_developer(self.store, "alice", emails=["alice@example.com"])
        first, second = RecordingMind(), RecordingMind()
        _, old = await self.login(one, "alice", token, first)
        _, new = await self.login(two, "alice", token, second)
        await wait_until(lambda: first.goodbyes, what="goodbye to the client on node1")
        self.assertEqual(first.goodbyes, ["signed in elsewhere"])
        await new.callRemote("watch", ["acme/widget"])
        event = await one.build("acme/widget", 1, "failure", author=AUTHOR)
        await wait_until(lambda: second.alerts, what=f"event {event}'s alert on node2")
        await wait_until(lambda: not one.hub.service.sessions, what="node1 to drop the old session")
        self.assertEqual(second.goodbyes, [])
        self.assertEqual(first.alerts, [])

    async def test_logins_racing_on_two_nodes_leave_exactly_one_client(self) -> None:
        one, two = await self.start_nodes(grace=0.2)
        token = await add_developer(self.store, "alice")
        minds = [RecordingMind() for _ in range(4)]
        logins = [self.login((one, two)[n % 2], "alice", token, mind) for n, mind in enumerate(minds)]
        sessions = await gatherResults([Deferred.fromCoroutine(login) for login in logins])  # keep them
        await wait_until(
            lambda: sum(1 for mind in minds if mind.goodbyes) == 3, what="three goodbyes for four logins"
        )
        kept = [mind for mind in minds if not mind.goodbyes]
        self.assertEqual(len(kept), 1)
        await wait_until(
            lambda: len(one.hub.service.sessions) + len(two.hub.service.sessions) == 1,
            what="one session left on the two nodes",
        )
        self.assertEqual(len(sessions), 4)

    async def test_refuse_new_refuses_a_login_on_another_node_while_the_client_answers(self) -> None:
        one, two = await self.start_nodes(login_policy="refuse-new", ping_timeout=0.5)
        token = await add_developer(self.store, "alice")
        _, first = await self.login(one, "alice", token, RecordingMind())
        with self.assertRaises(pb.RemoteError) as refused:
            await self.login(two, "alice", token, RecordingMind())
        self.assertIn("already signed in", str(refused.exception))
        await first.callRemote("ping")  # still attached

    async def test_refuse_new_takes_over_from_a_client_that_does_not_answer(self) -> None:
        one, two = await self.start_nodes(login_policy="refuse-new", ping_timeout=0.5)
        token = await add_developer(self.store, "alice")
        hung = RecordingMind(answer_pings=False)
        _, old = await self.login(one, "alice", token, hung)  # keep the reference: dropping it logs out
        mind = RecordingMind()
        _, new = await self.login(two, "alice", token, mind)
        await new.callRemote("watch", ["acme/widget"])
        await wait_until(lambda: not one.hub.service.sessions, what="node1 to drop the hung client")
        self.assertGreaterEqual(hung.pings, 1)

    async def test_refuse_new_takes_over_from_a_node_that_is_gone(self) -> None:
        one, two = await self.start_nodes(login_policy="refuse-new", ping_timeout=0.5)
        token = await add_developer(self.store, "alice")
        _, old = await self.login(one, "alice", token, RecordingMind())  # keep the reference
        one.hub.bus.stop()  # node1 hears nothing more, as if it were gone: no answer to the probe
        for unsubscribe in one.hub.service._unsubscribe:
            unsubscribe()
        _, new = await self.login(two, "alice", token, RecordingMind())
        self.assertEqual(await new.callRemote("ping"), "pong")


class StreamTests(NodesTestCase):
    async def test_concurrent_writers_while_watchers_resume_at_random_points(self) -> None:
        """Webhooks go to all three nodes at once while each watcher leaves
        at a random point and resumes from its last id on a random node:
        every watcher gets every event exactly once, in stream order."""
        nodes = await self.start_nodes(3)
        rng = random.Random(20261130)
        posts = [
            Deferred.fromCoroutine(
                nodes[rng.randrange(3)].build(f"acme/p{n % 3}", n, rng.choice(["success", "failure"]))
            )
            for n in range(150)
        ]
        projects = ["acme/p0", "acme/p1", "acme/p2"]

        async def watcher() -> list[int]:
            seen: list[int] = []
            since = 0
            for _ in range(500):
                mind, ref, client, answer = await self.observer(nodes[rng.randrange(3)], projects, since)
                await delivered(ref)
                for _ in range(rng.randrange(1, 4)):
                    await delivered(ref)
                seen += mind.event_ids
                client.disconnect()
                since = max([since, *mind.event_ids])
                if all(d.called for d in posts) and since >= max(stored_ids()):
                    break
            return seen

        def stored_ids() -> list[int]:
            return [d.result for d in posts if d.called] or [0]

        watchers = [watcher() for _ in range(4)]
        results = await gatherResults([Deferred.fromCoroutine(w) for w in watchers])
        expected = sorted(await gatherResults(posts))
        for seen in results:
            self.assertEqual(seen, expected, missing_events(expected, seen)())


class DatabaseConnectionTests(NodesTestCase):
    async def test_a_node_whose_database_connections_are_killed_recovers(self) -> None:
        """pg_terminate_backend on every connection of node2: it reconnects,
        its observers miss nothing, and it stores webhooks again."""
        one, two = await self.start_nodes()
        mind, ref, *_ = await self.observer(two, ["acme/widget"])
        before = await two.build("acme/widget", 1, "failure")
        await wait_until(lambda: mind.event_ids == [before], what=f"event {before}")

        def kill(conn: Any) -> int:
            return conn.execute(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = :name"
                ),
                {"name": f"buildnotify {two.hub.bus.node}"},
            ).scalar_one()

        self.assertGreater(await one.hub.store.write(kill), 0)
        during = [await one.build("acme/widget", n, "failure") for n in range(2, 5)]
        after = await two.build("acme/widget", 5, "success")
        expected = [before, *during, after]
        await wait_until(lambda: mind.event_ids == expected, what=missing_events(expected, mind.event_ids))
        self.flushLoggedErrors()


class StartingTogetherTests(unittest.TestCase):
    async def test_nodes_starting_together_migrate_once(self) -> None:
        """Three nodes upgrade a fresh database at once: one migrates, the
        others wait for it and find the schema at head (without the lock,
        they would all try to create the same tables)."""
        url = database_url(self, "postgresql")
        engines = [database.create(url) for _ in range(3)]
        for engine in engines:
            self.addCleanup(engine.dispose)
        await gatherResults([deferToThread(database.upgrade, engine) for engine in engines])
        self.assertEqual(
            {database.current_revision(engine) for engine in engines},
            {ScriptDirectory.from_config(database.alembic_config(engines[0])).get_current_head()},
        )

    async def test_one_pruner_at_a_time(self) -> None:
        one, two = await NodesTestCase.start_nodes(self)  # type: ignore[arg-type]
        old = await one.build("acme/widget", 1, "running", received_at="2026-01-01T00:00:00Z")
        await one.build("acme/widget", 1, "success")
        future = datetime.now(timezone.utc) + timedelta(days=365)
        holding, release = threading.Event(), threading.Event()

        def prune_slowly(conn: Any) -> tuple[int, int]:
            counts = retention.prune(conn, future)
            holding.set()
            release.wait(30)
            return counts

        first = one.hub.store.write(prune_slowly)
        await deferToThread(holding.wait, 30)
        self.assertEqual(await two.hub.store.write(lambda conn: retention.prune(conn, future)), (0, 0))
        release.set()
        self.assertEqual((await first)[0], 1)  # the old "running" update; the run's newest event stays
        self.assertNotIn(old, [e.id for e in await one.events()])
