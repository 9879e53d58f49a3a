"""A hub behind a real haproxy (deploy/haproxy.cfg, ``send-proxy-v2``) sees
each client's own address: the login throttle and the connection cap count
per client, not per balancer, and webhook log lines name the sender.

Clients connect to haproxy from different loopback addresses (127.0.0.2 and
127.0.0.3); haproxy itself reaches the hub from 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from twisted.internet import task
from twisted.internet.threads import deferToThread
from twisted.spread import pb

from buildnotify.config import PBSettings
from tests.balancer import Balancer
from tests.pbclient import Client, add_developer, wait_until
from tests.support import RunningHub
from tests.test_pb import PBTestCase
from tests.test_pb_sessions import closed

ALICE_ADDRESS, BOB_ADDRESS = "127.0.0.2", "127.0.0.3"


class ProxyProtocolTests(PBTestCase):
    async def start_behind_haproxy(self, clock: object = None, **settings: object) -> Balancer:
        self.hub = await RunningHub.start(
            self,
            self.backend,
            session=PBSettings(**settings),  # type: ignore[arg-type]
            clock=clock,
            proxied=True,
        )
        self.store = self.hub.hub.store
        http = f"127.0.0.1:{self.hub.hub.http_port.getHost().port}"
        pb_ = f"127.0.0.1:{self.hub.hub.pb_port.getHost().port}"
        # the config balances two nodes: here both are this one hub
        balancer = Balancer(Path(self.mktemp()).resolve(), [(http, pb_), (http, pb_)])
        balancer.directory.mkdir(parents=True)
        self.addCleanup(balancer.close)
        balancer.start()
        self.balancer = balancer
        return balancer

    async def client_from(self, source: str) -> Client:
        """A PB connection to the balancer from the loopback address ``source``."""
        return await Client.connect(
            self, f"tcp:host=127.0.0.1:port={self.balancer.pb_port}:bindAddress={source}"
        )

    async def test_wrong_logins_from_one_client_do_not_throttle_another(self) -> None:
        await self.start_behind_haproxy(clock=task.Clock(), login_failures=3, login_window=60.0)
        token = await add_developer(self.store, "alice")
        attacker = await self.client_from(ALICE_ADDRESS)
        for attempt in range(3):
            with self.assertRaises(pb.RemoteError) as refused:
                await attacker.login("alice", f"wrong-{attempt}", None)
            self.assertIn("unknown developer or wrong token", str(refused.exception))
        with self.assertRaises(pb.RemoteError) as throttled:
            await (await self.client_from(ALICE_ADDRESS)).login("alice", token, None)
        self.assertIn(f"too many failed logins from {ALICE_ADDRESS}", str(throttled.exception))

        session = await (await self.client_from(BOB_ADDRESS)).login("alice", token, None)
        self.assertEqual((await session.callRemote("whoami"))["developer"], "alice")
        [connection] = [c for c in self.hub.hub.service.connections if c.sessions]
        self.assertEqual(connection.peer, BOB_ADDRESS)

    async def test_the_connection_cap_counts_each_client_not_the_balancer(self) -> None:
        await self.start_behind_haproxy(connections_per_address=2)
        keep = []
        for source in (ALICE_ADDRESS, ALICE_ADDRESS, BOB_ADDRESS, BOB_ADDRESS):
            perspective = await (await self.client_from(source)).anonymous(None)
            self.assertEqual(await perspective.callRemote("ping"), "pong", source)
            keep.append(perspective)  # dropping a perspective logs its session out
        extra = await self.client_from(ALICE_ADDRESS)
        await wait_until(lambda: closed(extra), what=f"a third connection from {ALICE_ADDRESS} to be refused")
        self.assertEqual(len(self.hub.hub.service.sessions), 4)

        keep[0].broker.transport.loseConnection()  # one of alice's closes: she may connect again
        await wait_until(lambda: len(self.hub.hub.service.sessions) == 3, what="the hub to see the close")
        again = await (await self.client_from(ALICE_ADDRESS)).anonymous(None)
        self.assertEqual(await again.callRemote("ping"), "pong")

    async def test_a_webhook_through_haproxy_lands_and_its_log_line_names_the_sender(self) -> None:
        balancer = await self.start_behind_haproxy()
        body = {"project": "acme/widget", "pipeline": "ci", "number": 7, "status": "failure"}

        def post() -> tuple[int, dict]:
            conn = http.client.HTTPConnection(
                "127.0.0.1", balancer.http_port, timeout=10, source_address=(BOB_ADDRESS, 0)
            )
            try:
                conn.request("POST", "/hooks/generic", json.dumps(body), {"Content-Type": "application/json"})
                response = conn.getresponse()
                return response.status, json.loads(response.read())
            finally:
                conn.close()

        with self.assertLogs("buildnotify.ingest", "INFO") as logs:
            status, answer = await deferToThread(post)
        self.assertEqual((status, answer["stored"]), (200, 1), answer)
        [event] = await self.hub.events()
        self.assertEqual((event.project, event.build_number), ("acme/widget", 7))
        [line] = [line for line in logs.output if "accepted generic" in line]
        self.assertIn(f"accepted generic from {BOB_ADDRESS} acme/widget failure", line)
