"""Two real hub processes on one PostgreSQL database behind a real haproxy
(deploy/haproxy.cfg), as docs/deploy.md runs them: webhooks to the one
address land exactly once whichever node takes them, every node's history
has them all, PB clients through the one address are spread over both nodes,
and a node that is SIGKILLed costs no webhook."""

from __future__ import annotations

import time
from typing import Any

from twisted.trial import unittest

from tests.cluster import Cluster
from tests.pbclient import Client, RecordingMind

WIDGET = "acme/widget"
ACCEPTED = "accepted generic from 127.0.0.1 "  # the client's address, read from the PROXY header


class ClusterTests(unittest.TestCase):
    def accepted_on(self, cluster: Cluster, name: str) -> int:
        return cluster.output(name).count(ACCEPTED)

    async def test_webhooks_land_once_and_pb_clients_reach_both_nodes(self) -> None:
        cluster = Cluster.start(self, nodes=2, balancer=True)
        posted = [cluster.post_build(WIDGET, number, "failure") for number in range(1, 21)]
        self.assertEqual(len(set(posted)), 20)
        code, again = cluster.post({"project": WIDGET, "pipeline": "ci", "number": 1, "status": "failure"})
        self.assertEqual(
            (code, again["stored"]), (200, 0), "a redelivery, through either node, is not stored again"
        )
        for name in ("node1", "node2"):
            cluster.wait_for_log(name, ACCEPTED)  # round robin: both nodes took webhooks
        self.assertEqual(sum(self.accepted_on(cluster, n) for n in cluster.nodes), 21)

        # two PB clients held open: leastconn gives each node one
        assert cluster.balancer is not None
        sessions: list[Any] = []
        for _ in range(2):
            client = await Client.connect(self, f"tcp:127.0.0.1:{cluster.balancer.pb_port}")
            sessions.append(await client.anonymous(RecordingMind()))  # kept: dropping it logs it out
            self.assertEqual((await sessions[-1].callRemote("whoami"))["kind"], "anonymous")
        for name in cluster.nodes:
            cluster.wait_for_log(name, "anonymous session for anonymous")
            self.assertEqual(cluster.output(name).count("anonymous session for anonymous"), 1, name)

        # history on either node: all 20, each once
        for session in sessions:
            history = await session.callRemote("history", WIDGET, 100)
            self.assertEqual(sorted(e["id"] for e in history), sorted(posted))

    async def test_a_killed_node_costs_no_webhook_and_comes_back(self) -> None:
        cluster = Cluster.start(self, nodes=2, balancer=True)
        cluster.kill("node1")
        posted = [cluster.post_build(WIDGET, number, "failure") for number in range(1, 11)]
        self.assertEqual(
            self.accepted_on(cluster, "node2"), 10, "node2 took every webhook while node1 was down"
        )

        cluster.start_node("node1")
        deadline = time.monotonic() + 30  # haproxy checks every 2 s
        number = 10
        while ACCEPTED not in cluster.current_output("node1"):
            if time.monotonic() > deadline:
                raise AssertionError(
                    "haproxy sent no webhook to the restarted node1:\n" + cluster.output("node1")
                )
            number += 1
            posted.append(cluster.post_build(WIDGET, number, "failure"))
            time.sleep(0.1)
        result = cluster.cli(["history", "--project", WIDGET, "--limit", "1000", "--json"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(result.stdout.splitlines()), len(posted), "every webhook stored, once")
