"""The PB service over real loopback TCP: the four client patterns, claims,
alerts, resume, login policy, slow and dead clients."""

from __future__ import annotations

from twisted.spread import pb
from twisted.trial import unittest

from buildnotify.hub.settings import PBSettings
from buildnotify.store import accounts
from tests.pbclient import Client, RecordingMind, add_developer, delivered, wait_until
from tests.support import RunningHub

AUTHOR = {"name": "Alice", "email": "Alice@Example.com", "login": "alice"}


class PBTestCase(unittest.TestCase):
    backend = "sqlite"
    session = PBSettings()

    async def start(self, clock: object = None, **settings: object) -> RunningHub:
        """A hub with these ``[pb]`` settings; ``clock``: a ``task.Clock`` that
        runs its timeouts (None: real time)."""
        self.hub = await RunningHub.start(self, self.backend, session=PBSettings(**settings), clock=clock)  # type: ignore[arg-type]
        self.store = self.hub.hub.store
        return self.hub

    async def client(self) -> Client:
        return await Client.connect(self, self.hub.hub.pb_address)

    async def developer(self, name: str, mind: RecordingMind | None = None, **identities: list[str]):
        token = await add_developer(self.store, name, **identities)
        client = await self.client()
        return client, await client.login(name, token, mind), token

    async def observer(
        self, projects: list[str], since: int | None = None
    ) -> tuple[RecordingMind, pb.RemoteReference]:
        mind = RecordingMind()
        perspective = await (await self.client()).anonymous(mind)
        await perspective.callRemote("watch", projects, since)
        return mind, perspective


class ProjectPerspectiveTests(PBTestCase):
    async def test_every_observer_of_a_project_gets_every_event(self) -> None:
        await self.start()
        observers = [await self.observer(["acme/widget"]) for _ in range(20)]
        other, _ = await self.observer(["acme/gadget"])
        first = await self.hub.build("acme/widget", 1, "failure")
        second = await self.hub.build("acme/widget", 2, "success")
        await wait_until(lambda: all(len(m.events) == 2 for m, _ in observers), what="all observers")
        for mind, _ in observers:
            self.assertEqual(mind.event_ids, [first, second])
            self.assertEqual(
                [(e["project"], e["status"], e["transition"]) for e in mind.events],
                [("acme/widget", "failure", "failed"), ("acme/widget", "success", "fixed")],
            )
        self.assertEqual(other.events, [])

    async def test_a_claim_reaches_every_observer_and_clears_on_fix(self) -> None:
        await self.start()
        observers = [await self.observer(["acme/widget"]) for _ in range(3)]  # keep the references:
        minds = [mind for mind, _ in observers]  # dropping one logs the session out
        dev_mind = RecordingMind()
        _, alice, _ = await self.developer("alice", dev_mind)
        await alice.callRemote("watch", ["acme/widget"])
        await self.hub.build("acme/widget", 1, "success")
        with self.assertRaises(pb.RemoteError) as refused:
            await alice.callRemote("claim", "acme/widget", "ci", "main", "on it")
        self.assertIn("not failing", str(refused.exception))
        await self.hub.build("acme/widget", 2, "failure")
        claim = await alice.callRemote("claim", "acme/widget", "ci", "main", "on it")
        self.assertEqual((claim["developer"], claim["note"]), ("alice", "on it"))
        await wait_until(lambda: all(m.claims for m in [*minds, dev_mind]), what="the claim")
        for mind in [*minds, dev_mind]:
            self.assertEqual(
                [(c["state"], c["developer"], c["pipeline"], c["branch"]) for c in mind.claims],
                [("claimed", "alice", "ci", "main")],
            )
        status = await alice.callRemote("status", ["acme/widget"])
        self.assertEqual(status[0]["claim"]["developer"], "alice")
        await self.hub.build("acme/widget", 3, "success")
        await wait_until(lambda: all(len(m.claims) == 2 for m in minds), what="the claim to clear")
        self.assertEqual([c["state"] for c in minds[0].claims], ["claimed", "cleared"])
        self.assertIsNone((await alice.callRemote("status", ["acme/widget"]))[0]["claim"])


class DeveloperPerspectiveTests(PBTestCase):
    async def test_the_alert_reaches_only_the_authors_client(self) -> None:
        await self.start()
        alice_mind, bob_mind = RecordingMind(), RecordingMind()
        _, alice, _ = await self.developer("alice", alice_mind, emails=["alice@example.com"])
        _, bob, _ = await self.developer("bob", bob_mind, emails=["bob@example.com"])
        for perspective in (alice, bob):
            await perspective.callRemote("watch", ["acme/widget"])
        event_id = await self.hub.build("acme/widget", 1, "failure", author=AUTHOR)
        await wait_until(
            lambda: alice_mind.alerts and bob_mind.events, what=f"event {event_id}'s alert and event"
        )
        await delivered(alice, bob)  # a second alert, or one for bob, would be here by now
        self.assertEqual([a["event"]["id"] for a in alice_mind.alerts], [event_id])
        self.assertEqual(alice_mind.alerts[0]["event"]["transition"], "failed")
        self.assertEqual(bob_mind.alerts, [])
        self.assertEqual(bob_mind.event_ids, [event_id])  # bob still sees the project's event

    async def test_alerts_wait_for_the_client_and_acked_ones_are_not_sent_again(self) -> None:
        await self.start()
        token = await add_developer(self.store, "alice", logins=["alice"])
        broke = await self.hub.build("acme/widget", 1, "failure", author=AUTHOR)
        fixed = await self.hub.build("acme/widget", 2, "success", author=AUTHOR)
        await self.hub.build("acme/widget", 3, "success", author=AUTHOR)  # passed: no alert
        mind = RecordingMind()
        client = await self.client()
        alice = await client.login("alice", token, mind)
        await wait_until(lambda: len(mind.alerts) == 2, what="pending alerts")
        self.assertEqual([a["event"]["id"] for a in mind.alerts], [broke, fixed])
        self.assertEqual(await alice.callRemote("ack", [mind.alerts[0]["alert_id"]]), 1)
        client.disconnect()
        again = RecordingMind()
        alice = await (await self.client()).login("alice", token, again)
        await wait_until(lambda: again.alerts, what=f"the unacked alert of event {fixed}")
        await delivered(alice)  # the acked one would be here by now
        self.assertEqual([a["event"]["id"] for a in again.alerts], [fixed])


class AnonymousAndClientlessTests(PBTestCase):
    async def test_anonymous_sees_public_projects_only_and_cannot_claim(self) -> None:
        await self.start()
        await self.store.write(lambda conn: accounts.set_private(conn, "acme/secret", True))
        mind = RecordingMind()
        anonymous = await (await self.client()).anonymous(mind)
        with self.assertRaises(pb.RemoteError) as refused:
            await anonymous.callRemote("watch", ["acme/secret"])
        self.assertIn("private", str(refused.exception))
        await anonymous.callRemote("watch", ["acme/widget"])
        await self.hub.build("acme/secret", 1, "failure")
        public = await self.hub.build("acme/widget", 1, "failure")
        with self.assertRaises(pb.RemoteError) as claim:
            await anonymous.callRemote("claim", "acme/widget", "ci", "main")
        self.assertIn("anonymous sessions cannot claim", str(claim.exception))
        history = await anonymous.callRemote("history")
        self.assertEqual([e["project"] for e in history], ["acme/widget"])
        await wait_until(lambda: mind.events, what="the public event")
        self.assertEqual(mind.event_ids, [public])
        self.assertEqual(
            await anonymous.callRemote("projects"), [{"project": "acme/widget", "private": False}]
        )
        _, member, _ = await self.developer("alice")
        await self.store.write(lambda conn: accounts.add_member(conn, "acme/secret", "alice"))
        self.assertEqual(
            await member.callRemote("projects"),
            [{"project": "acme/secret", "private": True}, {"project": "acme/widget", "private": False}],
        )

    async def test_rooms_of_made_up_projects_are_forgotten(self) -> None:
        """Any client may name projects; a room nobody watches is dropped."""
        await self.start()
        mind, anonymous = await self.observer([f"made/up-{n}" for n in range(50)])
        self.assertEqual(len(self.hub.hub.service.rooms), 50)
        await anonymous.callRemote("unwatch", [f"made/up-{n}" for n in range(50)])
        self.assertEqual(self.hub.hub.service.rooms, {})

    async def test_anonymous_sessions_do_not_affect_each_other(self) -> None:
        await self.start()
        one, first = await self.observer(["acme/widget"])
        two, second = await self.observer(["acme/widget", "acme/gadget"])
        await second.callRemote("unwatch", ["acme/widget"])
        widget = await self.hub.build("acme/widget", 1, "failure")
        gadget = await self.hub.build("acme/gadget", 1, "failure")
        await wait_until(lambda: one.events and two.events, what=f"event {widget} and event {gadget}")
        await delivered(first, second)  # anything more for either would be here by now
        self.assertEqual((one.event_ids, two.event_ids), ([widget], [gadget]))

    async def test_a_clientless_session_answers_queries_and_is_never_called(self) -> None:
        await self.start()
        token = await add_developer(self.store, "alice", logins=["alice"])
        client = await self.client()
        received: list[object] = []
        original = client.broker.proto_message
        client.broker.proto_message = lambda *a: (received.append(a), original(*a))[1]
        session = await client.login("alice", token, None)
        with self.assertRaises(pb.RemoteError) as refused:
            await session.callRemote("watch", ["acme/widget"])
        self.assertIn("without a client", str(refused.exception))
        event_id = await self.hub.build("acme/widget", 1, "failure", author=AUTHOR)
        history = await session.callRemote("history", "acme/widget")
        self.assertEqual([e["id"] for e in history], [event_id])
        self.assertEqual(len(await session.callRemote("alerts")), 1)  # kept for a client
        await delivered(session)  # a call of the hub's would be here by now
        self.assertEqual(received, [])  # the hub never called this connection
