"""A hub node dies (SIGKILL) under its clients: real `buildnotify-cli serve`
processes on one PostgreSQL database, real WatchClients given both nodes'
endpoints. Each client moves to the surviving node after its own random
wait and resumes from the last event it saw: nothing lost, nothing twice."""

from __future__ import annotations

import random

from twisted.trial import unittest

from buildnotify.client import Phase, WatchClient
from tests.cluster import Cluster
from tests.pbclient import missing_events, wait_until
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
