"""Real `buildnotify-cli serve` processes on one PostgreSQL database. A node
dies (SIGKILL) under its clients, real WatchClients given both nodes'
endpoints: each moves to the surviving node after its own random wait and
resumes from the last event it saw, nothing lost, nothing twice. And the
bus between processes: events, claims and the goodbye cross them."""

from __future__ import annotations

import random
import re
from typing import Any

from twisted.trial import unittest

from buildnotify.client import Phase, WatchClient
from tests.cluster import Cluster
from tests.pbclient import Client, RecordingMind, missing_events, wait_until
from tests.test_client import Recorder, fast_retries

WIDGET = "acme/widget"
CLIENTS = 20


class FailoverTests(unittest.TestCase):
    async def test_clients_of_a_killed_node_resume_on_the_other_with_nothing_lost_or_repeated(self) -> None:
        cluster = Cluster.start(self, nodes=2)
        doomed, survivor = cluster.node("node2"), cluster.node("node1")
        rng = random.Random(20261130)
        clients = []
        for _ in range(CLIENTS):
            recorder = Recorder()
            client = WatchClient(
                recorder,
                hub=[doomed.pb_address, survivor.pb_address],  # node2 first: all start there
                projects=[WIDGET],
                retry_policy=fast_retries(),
                reconnect_spread=0.5,
                random_source=rng.random,
            )
            self.addCleanup(client.stop)
            client.start()
            clients.append((recorder, client))
        for _, client in clients:
            await wait_until(
                lambda client=client: client.state and client.state.phase == Phase.LIVE, what="live"
            )
            self.assertEqual(client.hub, doomed.pb_address)

        before = [cluster.post_build(WIDGET, n, "failure") for n in range(1, 6)]  # posted to node1
        for recorder, _ in clients:
            await wait_until(lambda r=recorder: len(r.ids) >= 5, what=missing_events(before, recorder.ids))

        cluster.kill("node2")
        during = [cluster.post_build(WIDGET, n, "success" if n % 2 else "failure") for n in range(6, 16)]
        expected = before + during
        for recorder, client in clients:
            await wait_until(
                lambda r=recorder: len(r.ids) >= len(expected),
                timeout=30,
                what=missing_events(expected, recorder.ids),
            )
            self.assertEqual(recorder.ids, expected, "every event once, in order")
            self.assertEqual(client.hub, survivor.pb_address)
        waits = {
            round(state.retry_in, 3)
            for recorder, _ in clients
            for state in recorder.states
            if state.phase == Phase.DISCONNECTED and state.retry_in
        }
        self.assertGreater(len(waits), CLIENTS // 2, "the clients' first waits are spread, not one instant")


class SeparateProcessesTests(unittest.TestCase):
    """The bus between real `serve` processes (tests/test_nodes.py runs the
    same cases with several hubs in one process)."""

    async def test_events_claims_and_the_goodbye_cross_processes(self) -> None:
        cluster = Cluster.start(self, nodes=2)
        one, two = cluster.node("node1"), cluster.node("node2")
        added = cluster.cli(["users", "add", "alice", "--email", "alice@example.com"])
        self.assertEqual(added.returncode, 0, added.stderr)
        token = re.search(r"token for alice: (\S+)", added.stdout).group(1)

        watcher = RecordingMind()
        _, watching = await self.login(two.pb_address, None, None, watcher)  # anonymous, on node2
        await watching.callRemote("watch", [WIDGET])
        first = RecordingMind()
        _, alice = await self.login(one.pb_address, "alice", token, first)  # alice's client, on node1
        await alice.callRemote("watch", [WIDGET])

        broke = cluster.post_build(WIDGET, 1, "failure", author={"email": "alice@example.com"})  # to node1
        await wait_until(lambda: watcher.event_ids == [broke], what=f"event {broke} on node2")
        await wait_until(lambda: first.alerts, what="alice's alert on node1")
        await alice.callRemote("claim", WIDGET, "ci", "main", "mine")  # made on node1
        await wait_until(lambda: watcher.claims, what="the claim on node2")
        self.assertEqual((watcher.claims[0]["state"], watcher.claims[0]["note"]), ("claimed", "mine"))

        second = RecordingMind()
        _, again = await self.login(two.pb_address, "alice", token, second)  # a second login, on node2
        await wait_until(lambda: first.goodbyes, what="goodbye to alice's client on node1")
        self.assertEqual(first.goodbyes, ["signed in elsewhere"])
        self.assertEqual(second.goodbyes, [])
        self.assertEqual(await again.callRemote("ping"), "pong")

    async def login(self, address: str, name: str | None, token: str | None, mind: RecordingMind) -> Any:
        client = await Client.connect(self, address)
        if name is None:
            return client, await client.anonymous(mind)
        return client, await client.login(name, token, mind)  # type: ignore[arg-type]
