"""Escalation over real parts: a hub on SQLite or PostgreSQL, a developer
with no client attached (or one that acks, or one that gets the alert), the
alert sent once through the developer's relay to a twisted.web receiver or
a local mail server. The hub's clock is a task.Clock; checks are awaited."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any
from unittest import mock

from sqlalchemy import select
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial import unittest

from buildnotify import cli
from buildnotify.events import utcnow
from buildnotify.hub.settings import PBSettings
from buildnotify.relays import EscalationSettings, escalation, outbox
from buildnotify.store.schema import alerts
from tests.pbclient import Client, RecordingMind, add_developer, wait_until
from tests.relay_receivers import MailServer, Receiver
from tests.support import RunningHub, clock_at, database_url, per_backend

AFTER = 300.0
#: a check on the hub's clock only when a test awaits one
ESCALATION = {"after": AFTER, "check_every": 1e9}
ADA = {"name": "Ada", "email": "ada@commits.example", "login": "ada"}


class EscalationHub:
    """A hub with relays and escalation checked only when a test says so."""

    backend = "sqlite"

    async def start(self, relays: dict[str, Any], database: str | None = None, node: str = "") -> RunningHub:
        self.clock = getattr(self, "clock", None) or clock_at(utcnow())
        return await RunningHub.start(
            self,
            self.backend,
            clock=self.clock,
            database=database,
            node=node,
            relays=relays,
            escalation=ESCALATION,
            session=PBSettings(heartbeat=1e9, idle_timeout=1e9),
        )

    async def pager(self) -> tuple[RunningHub, Receiver]:
        """A hub whose ``pager`` relay forwards no events, only escalations."""
        receiver = Receiver.listen(self)
        hub = await self.start({"pager": {"kind": "webhook", "url": receiver.url, "projects": ["none/*"]}})
        self.token = await add_developer(hub.hub.store, "ada", logins=["ada"])
        await hub.hub.store.write(lambda conn: escalation.set_relay(conn, "ada", "pager"))
        return hub, receiver

    async def check(self, hub: RunningHub, advance: float = 0.0) -> list[int]:
        self.clock.advance(advance)
        escalated = await hub.hub.relays.escalation.check()
        await hub.hub.relays.sender.tick()
        return escalated

    async def escalated_alerts(self, hub: RunningHub) -> list[int]:
        rows = await hub.hub.store.read(outbox.every)
        return [row["alert_id"] for row in rows if row["alert_id"] is not None]


class EscalationTests(EscalationHub):
    async def test_an_alert_no_client_received_is_escalated_once(self) -> None:
        hub, receiver = await self.pager()
        await hub.build("acme/widget", 1, "failure", author=ADA)
        self.assertEqual(await self.check(hub), [])  # not yet: it may still be seen
        self.assertEqual(await self.check(hub, AFTER - 60), [])
        [alert_id] = await self.check(hub, 120)
        [request] = receiver.requests
        body = json.loads(request.body)
        self.assertEqual(
            (body["kind"], body["developer"], body["event"]["project"]), ("alert", "ada", "acme/widget")
        )
        self.assertTrue(body["text"].startswith("ada: your build alert was not seen"))
        self.assertEqual(await self.check(hub, AFTER), [])
        self.assertEqual(await self.check(hub, 3600), [])
        self.assertEqual(await self.escalated_alerts(hub), [alert_id])
        self.assertEqual(len(receiver.requests), 1)

    async def test_an_alert_older_than_max_age_is_not_escalated(self) -> None:
        """Turning escalation on (or a hub down for a day) does not send a backlog."""
        hub, receiver = await self.pager()
        await hub.build("acme/widget", 1, "failure", author=ADA)
        self.assertEqual(await self.check(hub, EscalationSettings().max_age + 1), [])
        self.assertEqual((await self.escalated_alerts(hub), receiver.requests), ([], []))

    async def test_an_ack_from_any_client_first_cancels_it(self) -> None:
        hub, receiver = await self.pager()
        await hub.build("acme/widget", 1, "failure", author=ADA)
        client = await Client.connect(self, hub.hub.pb_address)
        session = await client.login("ada", self.token)  # no mind: a clientless `buildnotify-cli ack`
        [pending] = await session.callRemote("alerts")
        self.assertEqual(await session.callRemote("ack", [pending["alert_id"]]), 1)
        self.assertEqual(await self.check(hub, AFTER + 60), [])
        self.assertEqual((await self.escalated_alerts(hub), receiver.requests), ([], []))

    async def test_an_ack_while_the_escalation_waits_for_a_failing_relay_cancels_it(self) -> None:
        hub, receiver = await self.pager()
        receiver.answer = (503, {})
        await hub.build("acme/widget", 1, "failure", author=ADA)
        [alert_id] = await self.check(hub, AFTER + 60)
        self.assertEqual(len(receiver.requests), 1)
        client = await Client.connect(self, hub.hub.pb_address)
        session = await client.login("ada", self.token)
        self.assertEqual(await session.callRemote("ack", [alert_id]), 1)
        receiver.answer = (200, {})
        await self.check(hub, 3600)
        self.assertEqual(len(receiver.requests), 1)  # not sent after the ack
        [row] = await hub.hub.store.read(outbox.every)
        self.assertEqual((row["state"], row["last_error"]), ("dead", outbox.ACKED))

    async def test_an_alert_pushed_to_an_attached_client_is_not_escalated(self) -> None:
        hub, receiver = await self.pager()
        mind = RecordingMind()
        client = await Client.connect(self, hub.hub.pb_address)
        self.perspective = await client.login("ada", self.token, mind)
        await hub.build("acme/widget", 1, "failure", author=ADA)
        await wait_until(lambda: mind.alerts, what="the alert at the attached client")

        await hub.hub.store.write(lambda conn: None)  # the writer is FIFO: the delivery is recorded
        delivered = await hub.hub.store.read(
            lambda conn: conn.execute(select(alerts.c.delivered_at)).scalar()
        )
        self.assertIsNotNone(delivered)
        self.assertEqual(await self.check(hub, AFTER + 60), [])
        self.assertEqual(receiver.requests, [])

    async def test_alerts_pushed_when_the_client_signs_in_are_not_escalated(self) -> None:
        hub, receiver = await self.pager()
        for number in (1, 2):  # while ada is away: broke, then still failing
            await hub.build("acme/widget", number, "failure", author=ADA)
        mind = RecordingMind()
        client = await Client.connect(self, hub.hub.pb_address)
        self.perspective = await client.login("ada", self.token, mind)
        await wait_until(lambda: len(mind.alerts) == 2, what="both pending alerts at sign-in")
        await hub.hub.store.write(lambda conn: None)  # the writer is FIFO: the deliveries are recorded
        self.assertEqual(await self.check(hub, AFTER + 60), [])
        self.assertEqual(receiver.requests, [])

    async def test_a_muted_project_is_not_escalated(self) -> None:
        hub, receiver = await self.pager()
        client = await Client.connect(self, hub.hub.pb_address)
        session = await client.login("ada", self.token)
        await session.callRemote("mute", "acme/widget")
        await hub.build("acme/widget", 1, "failure", author=ADA)
        self.assertEqual(await self.check(hub, AFTER + 60), [])

    async def test_an_smtp_relay_to_the_author_mails_the_developers_own_address(self) -> None:
        server = MailServer.listen(self)
        relay = {
            "kind": "smtp",
            "host": "127.0.0.1",
            "port": server.port,
            "to": "author",
            "projects": ["none/*"],
        }
        hub = await self.start({"mail": relay})
        await add_developer(hub.hub.store, "ada", emails=["ada@home.example"], logins=["ada"])
        self.assertEqual(self.cli(hub, ["users", "escalate", "ada", "--relay", "mail"]), 0)
        await hub.build("acme/widget", 1, "failure", author=ADA)
        self.assertEqual(len(await self.check(hub, AFTER + 60)), 1)
        [(recipient, mail)] = server.mails
        self.assertEqual(recipient, "ada@home.example")
        self.assertEqual(mail["Subject"], "[buildnotify] acme/widget ci (main) #1 failed")
        self.assertIn("ada: your build alert was not seen", mail.get_payload())
        self.assertEqual(self.cli(hub, ["users", "escalate", "ada", "--relay", "pager"]), 1)  # no such relay
        self.assertEqual(self.cli(hub, ["users", "escalate", "ada", "--off"]), 0)
        await hub.build("acme/widget", 2, "failure", author=ADA)
        self.assertEqual(await self.check(hub, AFTER + 60), [])

    def cli(self, hub: RunningHub, argv: list[str]) -> int:
        config = Path(self.mktemp())
        tables = "".join(
            f'[relays.{name}]\nkind = "{relay.kind}"\nto = "author"\n'
            for name, relay in hub.hub.relays.relays.items()
        )
        config.write_text(tables)
        with mock.patch("sys.stdout", StringIO()), mock.patch("sys.stderr", StringIO()):
            return cli.main([*argv, "--config", str(config), "--db", hub.hub.config.database])


per_backend(EscalationTests, globals())


class TestTwoNodesEscalateOncePostgreSQL(EscalationHub, unittest.TestCase):
    """Several nodes share a PostgreSQL database only."""

    backend = "postgresql"

    async def test_two_nodes_escalate_an_alert_once(self) -> None:
        receiver = Receiver.listen(self)
        url = database_url(self, self.backend)
        relays = {"pager": {"kind": "webhook", "url": receiver.url, "projects": ["none/*"]}}
        first = await self.start(relays, database=url, node="node1")
        second = await self.start(relays, database=url, node="node2")
        await add_developer(first.hub.store, "ada", logins=["ada"])
        await first.hub.store.write(lambda conn: escalation.set_relay(conn, "ada", "pager"))
        await first.build("acme/widget", 1, "failure", author=ADA)
        self.clock.advance(AFTER + 60)
        for _ in range(3):  # both at once, a few times over
            await gatherResults(
                [Deferred.fromCoroutine(hub.hub.relays.escalation.check()) for hub in (first, second)]
            )
        await gatherResults([hub.hub.relays.sender.tick() for hub in (first, second)])
        self.assertEqual(len(await self.escalated_alerts(first)), 1)
        await wait_until(lambda: receiver.requests, what="the escalation")
        await gatherResults([hub.hub.relays.sender.tick() for hub in (first, second)])
        self.assertEqual(len(receiver.requests), 1)
