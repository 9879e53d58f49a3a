"""PB sessions over real loopback TCP: a developer's second login (kick-old,
refuse-new), resume without gap or duplicate, slow and dead clients, jelly
security, login refusals and mutes."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.spread import jelly, pb

from buildnotify.hub import sessions
from buildnotify.hub.outbox import Outbox
from buildnotify.protocol import SECURITY
from tests.pbclient import (
    EPSILON,
    Client,
    RecordingMind,
    add_developer,
    answered,
    delivered,
    missing_events,
    refusal,
    wait_until,
)
from tests.support import clock_at
from tests.test_pb import AUTHOR, PBTestCase

WIDGET, GADGET = "acme/widget", "acme/gadget"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=timezone.utc)  # where clocks of mute tests start
HEARTBEAT, PING_TIMEOUT = 30.0, 5.0  # the defaults, on a task.Clock


def closed(client: Client) -> bool:
    """Whether the hub (or we) closed this client's connection."""
    return bool(client.broker.disconnected)


def remote_type(error: pb.RemoteError) -> str:
    kind = error.remoteType
    return kind.decode() if isinstance(kind, bytes) else kind


async def heartbeat(clock: task.Clock, *answering: tuple[RecordingMind, pb.RemoteReference]) -> None:
    """One heartbeat on the hub's clock: each of these clients is pinged, and
    its answer has reached the hub (a call behind it was answered)."""
    before = [mind.pings for mind, _ in answering]
    clock.advance(HEARTBEAT)
    for (mind, perspective), pings in zip(answering, before, strict=True):
        await wait_until(lambda m=mind, p=pings: m.pings > p, what=f"a heartbeat ping after {pings}")
        await delivered(perspective)


class KickOldTests(PBTestCase):
    """The default policy: the newest login of a developer wins. The grace
    period runs on a task.Clock."""

    GRACE = 5.0

    async def start_clocked(self) -> None:
        self.clock = task.Clock()
        await self.start(clock=self.clock, grace=self.GRACE)

    async def two_logins(
        self,
    ) -> tuple[Client, pb.RemoteReference, RecordingMind, pb.RemoteReference, RecordingMind]:
        await self.start_clocked()
        self.token = await add_developer(self.store, "alice", logins=["alice"])
        old_mind, new_mind = RecordingMind(), RecordingMind()
        old_client = await self.client()
        old = await old_client.login("alice", self.token, old_mind)
        await old.callRemote("watch", [WIDGET])
        self.assertEqual(await old.callRemote("ping"), "pong")
        new = await (await self.client()).login("alice", self.token, new_mind)
        await new.callRemote("watch", [WIDGET])
        await wait_until(lambda: old_mind.goodbyes, what="goodbye to the old client")
        self.assertEqual(old_mind.goodbyes, ["signed in elsewhere"])
        self.assertEqual(new_mind.goodbyes, [])
        return old_client, old, old_mind, new, new_mind

    async def test_the_old_client_is_told_and_alerts_go_to_the_new_one(self) -> None:
        old_client, old, old_mind, new, new_mind = await self.two_logins()
        broke = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        await wait_until(lambda: new_mind.alerts, what=f"the alert of event {broke} on the new client")
        await delivered(new, old)  # a second alert, or one to the old client, would be here by now
        self.assertEqual([a["event"]["id"] for a in new_mind.alerts], [broke])
        self.assertEqual(old_mind.alerts, [])
        # after the grace period the old one is detached and, alone on its
        # connection, disconnected
        self.clock.advance(self.GRACE)
        await wait_until(lambda: closed(old_client), what="the old connection to close after the grace")
        self.assertEqual(await new.callRemote("ping"), "pong")
        fixed = await self.hub.build(WIDGET, 2, "success", author=AUTHOR)
        await wait_until(lambda: len(new_mind.alerts) == 2, what=f"the alert of event {fixed}")
        self.assertEqual([a["event"]["id"] for a in new_mind.alerts], [broke, fixed])
        self.assertEqual(new_mind.event_ids, [broke, fixed])
        self.assertNotIn(fixed, old_mind.event_ids)
        self.assertEqual(old_mind.alerts, [])

    async def test_a_client_that_ignores_goodbye_is_cut_off_after_the_grace(self) -> None:
        old_client, old, old_mind, new, new_mind = await self.two_logins()
        self.clock.advance(self.GRACE - EPSILON)
        await answered(old, "the old session works until the grace ends")
        self.assertFalse(closed(old_client), "closed before the grace ended")
        self.clock.advance(2 * EPSILON)
        with self.assertRaises((pb.RemoteError, pb.DeadReferenceError, pb.PBConnectionLost)) as failed:
            await old.callRemote("ping")
        if isinstance(failed.exception, pb.RemoteError):  # the call beat the hub closing the connection
            self.assertIn("replaced by a newer session", str(failed.exception))
        await wait_until(lambda: closed(old_client), what="the old connection to close after the grace")
        with self.assertRaises(pb.DeadReferenceError):
            await old.callRemote("ping")
        self.assertEqual(await new.callRemote("ping"), "pong")

    async def test_a_connection_shared_with_another_session_stays_open(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice", logins=["alice"])
        shared = await self.client()
        old_mind, watcher_mind, new_mind = RecordingMind(), RecordingMind(), RecordingMind()
        old = await shared.login("alice", token, old_mind)
        watcher = await shared.anonymous(watcher_mind)
        await old.callRemote("watch", [WIDGET])
        await watcher.callRemote("watch", [WIDGET])
        new = await (await self.client()).login("alice", token, new_mind)
        await wait_until(lambda: old_mind.goodbyes, what="goodbye")
        self.assertEqual(old_mind.goodbyes, ["signed in elsewhere"])
        self.clock.advance(self.GRACE - EPSILON)
        await answered(old, "the old session works until the grace ends")
        self.clock.advance(2 * EPSILON)
        for method, *args in (("history", WIDGET), ("ping",), ("whoami",), ("alerts",)):
            refused = await refusal(old.callRemote(method, *args), f"{method} refused after the grace")
            self.assertIn("replaced by a newer session", str(refused))
            self.assertEqual(remote_type(refused), "buildnotify.protocol.SessionEnded")
        self.assertFalse(closed(shared))
        self.assertEqual(await watcher.callRemote("ping"), "pong")
        event_id = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        await wait_until(
            lambda: watcher_mind.events and new_mind.alerts, what=f"event {event_id} and its alert"
        )
        await delivered(watcher, new)  # anything for the old session would be here by now
        self.assertEqual(watcher_mind.event_ids, [event_id])
        self.assertEqual(old_mind.events, [])  # detached from the room too
        self.assertEqual(old_mind.alerts, [])
        self.assertEqual([a["event"]["id"] for a in new_mind.alerts], [event_id])
        self.assertFalse(closed(shared))

    async def test_a_connection_shared_with_a_clientless_session_stays_open(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice", logins=["alice"])
        shared = await self.client()
        old = await shared.login("alice", token, RecordingMind())
        script = await shared.login("alice", token, None)  # a clientless session on the same connection
        await old.callRemote("watch", [WIDGET])
        new = await (await self.client()).login("alice", token, RecordingMind())
        self.clock.advance(self.GRACE - EPSILON)
        self.assertEqual(self._developer_sessions(), 2, "the old session was detached before the grace ended")
        self.clock.advance(2 * EPSILON)
        self.assertEqual(self._developer_sessions(), 1, "the old session outlived the grace")
        self.assertEqual(await script.callRemote("ping"), "pong")  # a lost connection would fail this
        self.assertFalse(closed(shared))
        self.assertEqual(await new.callRemote("ping"), "pong")

    def _developer_sessions(self) -> int:
        """How many developer sessions (of alice's) the hub holds."""
        return [s.kind for s in self.hub.hub.service.sessions].count("developer")


class RefuseNewTests(PBTestCase):
    """A second login is refused while the first client answers a ping; the
    ping timeout and the heartbeat run on a task.Clock."""

    async def start_clocked(self, **settings: Any) -> task.Clock:
        clock = task.Clock()
        await self.start(clock=clock, login_policy="refuse-new", ping_timeout=PING_TIMEOUT, **settings)
        return clock

    async def wait_out_the_ping(
        self, clock: task.Clock, hung_mind: RecordingMind, hung: pb.RemoteReference, logins: list[Deferred]
    ) -> None:
        """The hub pings the signed-in client, which never answers: it stays
        signed in and no login is answered until the ping times out; then
        every login is."""
        await wait_until(lambda: hung_mind.pings == 1, what="the hub to ping the signed-in client")
        clock.advance(PING_TIMEOUT - EPSILON)
        await answered(hung, "the first client is signed in until the ping timeout")
        self.assertFalse(any(d.called for d in logins), "a login was answered before the ping timeout")
        clock.advance(2 * EPSILON)
        await wait_until(
            lambda: all(d.called for d in logins), what="every login answered after the ping timeout"
        )

    async def test_two_logins_racing_a_hung_client_do_not_both_win(self) -> None:
        clock = await self.start_clocked()
        token = await add_developer(self.store, "alice", logins=["alice"])
        hung_mind = RecordingMind(answer_pings=False)
        hung = await (await self.client()).login("alice", token, hung_mind)
        first, second = await self.client(), await self.client()
        racing = [
            Deferred.fromCoroutine(client.login("alice", token, RecordingMind()))
            for client in (first, second)
        ]
        await self.wait_out_the_ping(clock, hung_mind, hung, racing)
        results = await DeferredList(
            racing, consumeErrors=True
        )  # holds the perspectives: dropping one logs out
        outcomes = ["in" if ok else str(value.value) for ok, value in results]
        self.assertEqual(outcomes.count("in"), 1, outcomes)
        self.assertIn("already signed in", [o for o in outcomes if o != "in"][0])
        with self.assertRaises((pb.RemoteError, pb.DeadReferenceError)):  # the hung one was dropped
            await hung.callRemote("ping")

    async def test_a_second_login_is_refused_while_the_first_answers(self) -> None:
        clock = await self.start_clocked(heartbeat=HEARTBEAT)
        token = await add_developer(self.store, "alice", logins=["alice"])
        first_mind, refused_mind = RecordingMind(), RecordingMind()
        first = await (await self.client()).login("alice", token, first_mind)
        second_client = await self.client()
        with self.assertRaises(pb.RemoteError) as refused:
            await second_client.login("alice", token, refused_mind)
        self.assertEqual(remote_type(refused.exception), "buildnotify.protocol.LoginFailed")
        self.assertIn("alice is already signed in from another client", str(refused.exception))
        self.assertEqual(first_mind.pings, 1)
        self.assertEqual(first_mind.goodbyes, [])
        self.assertEqual(await first.callRemote("ping"), "pong")
        # the refused connection stays open: a clientless login on it works
        # (and is the barrier for anything the hub sends there below)
        script = await second_client.login("alice", token, None)
        broke = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        await wait_until(lambda: first_mind.alerts, what=f"the alert of event {broke} on the first client")
        # heartbeats go on; the refused login has no session, so its mind is
        # never called
        for _ in range(3):
            await heartbeat(clock, (first_mind, first))
        self.assertEqual(first_mind.pings, 4)
        self.assertEqual([a["event"]["id"] for a in first_mind.alerts], [broke])
        await delivered(script)
        self.assertEqual(
            (refused_mind.pings, refused_mind.alerts, refused_mind.goodbyes),
            (0, [], []),
            "refused mind was called",
        )
        self.assertFalse(closed(second_client))

    async def test_a_hung_first_client_is_replaced_after_the_ping_timeout(self) -> None:
        clock = await self.start_clocked()
        token = await add_developer(self.store, "alice", logins=["alice"])
        hung_mind, new_mind = RecordingMind(answer_pings=False), RecordingMind()
        hung_client = await self.client()
        hung = await hung_client.login("alice", token, hung_mind)
        await hung.callRemote("watch", [WIDGET])
        login = Deferred.fromCoroutine((await self.client()).login("alice", token, new_mind))
        await self.wait_out_the_ping(clock, hung_mind, hung, [login])
        new = await login
        self.assertEqual(hung_mind.pings, 1)
        await wait_until(lambda: closed(hung_client), what="the hung client to be dropped")
        broke = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        await wait_until(lambda: new_mind.alerts, what=f"the alert of event {broke} on the new client")
        self.assertEqual([a["event"]["id"] for a in new_mind.alerts], [broke])
        self.assertEqual(hung_mind.alerts, [])
        self.assertEqual(await new.callRemote("ping"), "pong")


class ResumeTests(PBTestCase):
    """A client that reconnects with the last id it saw gets every event of
    its projects exactly once, in id order."""

    def setUp(self) -> None:
        self.delayed: list[Any] = []  # announcements a test holds back, as calls on the reactor

    async def resume(self, away: int) -> dict[str, Any]:
        numbers = itertools.count(1)

        async def post(project: str = WIDGET) -> int:
            number = next(numbers)
            return await self.hub.build(project, number, "failure" if number % 3 else "success")

        first_mind, second_mind = RecordingMind(), RecordingMind()
        first_client = await self.client()
        first = await first_client.anonymous(first_mind)
        await first.callRemote("watch", [WIDGET], None)
        for _ in range(5):
            await post()
            await post(GADGET)  # ids of other projects in between
        await wait_until(lambda: len(first_mind.events) == 5, timeout=5, what="the first events")
        first_client.disconnect()
        await wait_until(lambda: closed(first_client), timeout=5, what="the disconnect")
        for _ in range(away):
            await post()
        await post(GADGET)

        done, during = False, []

        async def keep_posting() -> None:
            while not done:
                during.append(await post())
                await post(GADGET)
            for _ in range(3):
                during.append(await post())

        poster = Deferred.fromCoroutine(keep_posting())
        await wait_until(lambda: during, timeout=5, what="posting to start")
        second = await (await self.client()).anonymous(second_mind)
        answer = await second.callRemote("watch", [WIDGET], first_mind.event_ids[-1])
        before_answer = list(second_mind.event_ids)  # PB delivers in order: all sent before the answer
        done = True
        await poster
        stored = [e.id for e in await self.hub.events(WIDGET)]

        def every_event() -> str:
            received = first_mind.event_ids + second_mind.event_ids
            return missing_events(stored, received, answer["last_id"])()

        await wait_until(lambda: stored[-1] in second_mind.event_ids, timeout=10, what=every_event)
        await wait_until(
            lambda: not any(call.active() for call in self.delayed), what="the delayed announcements to run"
        )
        await delivered(second)  # a duplicate would be here by now
        self.assertEqual(first_mind.event_ids + second_mind.event_ids, stored, every_event())
        # the answer's position covers exactly what was pushed before it: a client
        # storing it neither repeats an event on its next resume nor skips one
        self.assertGreaterEqual(answer["last_id"], max(before_answer, default=0))
        covered = [i for i in stored if i <= answer["last_id"]]
        self.assertEqual(covered, first_mind.event_ids + before_answer)
        self.assertGreater(len(during), 3)  # events were committed during the reconnect
        self.assertGreaterEqual(answer["replayed"], away)
        self.assertEqual({e["project"] for e in second_mind.events}, {WIDGET})
        return answer

    async def test_resume_during_a_stream_of_events(self) -> None:
        await self.start()
        await self.resume(away=10)

    async def test_resume_pages_through_a_long_absence(self) -> None:
        self.patch(sessions, "CATCH_UP_PAGE", 4)
        await self.start()
        answer = await self.resume(away=23)
        self.assertGreater(answer["replayed"], 4 * 5)

    async def test_resume_when_events_are_announced_after_other_readers_see_them(self) -> None:
        """Across hub nodes an event is visible in the database before its
        notification arrives; it must still be pushed once."""
        await self.start()
        announce = self.store._announce
        self.patch(
            self.store,
            "_announce",
            lambda recorded: (self.delayed.append(reactor.callLater(0.05, announce, recorded)), recorded)[1],
        )
        await self.resume(away=10)  # (it waits for every delayed announcement)


class StreamPositionTests(PBTestCase):
    """The watch answer's ``last_id``: where the session's stream stands."""

    async def test_an_empty_hub_answers_zero_and_a_later_one_its_newest_event(self) -> None:
        await self.start()
        _, first = await self.observer([WIDGET])
        self.assertEqual((await first.callRemote("watch", [WIDGET]))["last_id"], 0)
        newest = await self.hub.build(GADGET, 1, "failure")  # a project this watch cannot see
        mind, second = await self.observer([WIDGET])
        answer = await second.callRemote("watch", [WIDGET], None)
        self.assertEqual((answer["last_id"], answer["replayed"], mind.events), (newest, 0, []))
        live = await self.hub.build(WIDGET, 1, "failure")
        await wait_until(lambda: mind.event_ids == [live], what=f"event {live} after the position {newest}")

    async def test_a_session_that_ends_while_its_watch_waits_joins_no_room(self) -> None:
        await self.start()
        gate: Deferred[None] = Deferred()
        waiting, read_done = [], []
        real_read = self.store.read

        async def held(query: Any, **kwargs: Any) -> Any:
            waiting.append(query)
            await gate
            result = await real_read(query, **kwargs)
            read_done.append(query)
            return result

        self.patch(self.store, "read", lambda query, **kw: Deferred.fromCoroutine(held(query, **kw)))
        client = await self.client()
        perspective = await client.anonymous(RecordingMind())
        service = self.hub.hub.service
        [session] = service.sessions
        answer = perspective.callRemote("watch", [WIDGET], None)
        answer.addErrback(lambda _: None)  # the connection goes before it answers
        await wait_until(lambda: waiting, what="the watch to wait on the store")
        client.disconnect()
        await wait_until(lambda: not service.sessions, what="the hub to end the session")
        gate.callback(None)
        await wait_until(lambda: read_done, what="the watch's read to finish")
        await wait_until(lambda: not session._watch_lock.locked, what="the watch to finish on the hub")
        room = service.rooms.get(WIDGET)
        self.assertIsNone(room, f"an ended session joined {WIDGET}: {room and room.observers}")


class SlowConsumerTests(PBTestCase):
    async def test_a_client_that_stops_reading_is_evicted_and_others_get_everything(self) -> None:
        limit = 20
        await self.start(queue_limit=limit)
        service = self.hub.hub.service
        slow_mind, reader_mind = RecordingMind(), RecordingMind()
        slow_client = await self.client()
        slow = await slow_client.anonymous(slow_mind)
        await slow.callRemote("watch", [WIDGET])
        reader = await (await self.client()).anonymous(reader_mind)
        await reader.callRemote("watch", [WIDGET])
        local_port = slow_client.broker.transport.getHost().port
        [connection] = [c for c in service.connections if c.getPeer().port == local_port]
        outbox = connection.outbox
        [session] = list(connection.sessions)
        self.assertIsInstance(outbox, Outbox)

        slow_client.broker.transport.pauseProducing()  # stop reading the socket
        url = "https://ci.example.com/" + "x" * 256 * 1024
        posted: list[int] = []
        for number in range(1, 300):
            if session.ended is not None:
                break
            posted.append(await self.hub.build(WIDGET, number, "failure", url=url))
        self.assertEqual(session.ended, "too slow")
        self.assertTrue(outbox.overflowed)
        self.assertLessEqual(outbox.peak, limit + 1)
        self.assertGreater(outbox.peak, 0)
        for number in range(1000, 1005):  # the others go on
            posted.append(await self.hub.build(WIDGET, number, "success", url="https://ci.example.com/ok"))
        await wait_until(
            lambda: len(reader_mind.events) == len(posted), timeout=20, what="the reader's events"
        )
        self.assertEqual(reader_mind.event_ids, posted)
        self.assertEqual(await reader.callRemote("ping"), "pong")
        # reading again, the slow client finds goodbye("too slow") at the end,
        # then the hub closes the connection
        slow_client.broker.transport.resumeProducing()
        await wait_until(
            lambda: closed(slow_client), timeout=10, what="the slow client's connection to close"
        )
        self.assertEqual(slow_mind.goodbyes, ["too slow"])
        self.assertLess(len(slow_mind.events), len(posted))
        self.assertEqual(slow_mind.event_ids, posted[: len(slow_mind.events)])  # a prefix, in order


class HeartbeatTests(PBTestCase):
    async def test_a_client_that_never_answers_a_ping_is_dropped(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock, heartbeat=HEARTBEAT, ping_timeout=PING_TIMEOUT)
        hung_mind, healthy_mind = RecordingMind(answer_pings=False), RecordingMind()
        hung_client, healthy_client = await self.client(), await self.client()
        hung = await hung_client.anonymous(hung_mind)
        healthy = await healthy_client.anonymous(healthy_mind)
        await hung.callRemote("watch", [WIDGET])
        await healthy.callRemote("watch", [WIDGET])
        await heartbeat(clock, (healthy_mind, healthy))
        await wait_until(lambda: hung_mind.pings == 1, what="the heartbeat's ping on the hung client")
        clock.advance(PING_TIMEOUT - EPSILON)
        await answered(hung, "the hung client is attached until its ping times out")
        self.assertFalse(closed(hung_client), "dropped before the ping timeout")
        clock.advance(2 * EPSILON)
        await wait_until(lambda: closed(hung_client), what="the hung client to be dropped")
        for _ in range(3):
            await heartbeat(clock, (healthy_mind, healthy))
        self.assertEqual(healthy_mind.pings, 4)
        self.assertFalse(closed(healthy_client))
        event_id = await self.hub.build(WIDGET, 1, "failure")
        await wait_until(lambda: healthy_mind.events, what=f"event {event_id}")
        self.assertEqual(healthy_mind.event_ids, [event_id])
        self.assertEqual(hung_mind.events, [])
        self.assertEqual(await healthy.callRemote("ping"), "pong")


class Smuggled(pb.Copyable, pb.RemoteCopy):
    """A type of the client's own; the hub must not unjelly it."""

    def __init__(self) -> None:
        self.command = "rm -rf /"


pb.setUnjellyableForClass(Smuggled, Smuggled)  # registered, as a client would


class JellySecurityTests(PBTestCase):
    async def test_a_foreign_type_is_refused_and_the_connection_keeps_working(self) -> None:
        await self.start()
        mind = RecordingMind()
        client = await self.client()
        perspective = await client.anonymous(mind)
        for args in [(Smuggled(),), ([WIDGET, Smuggled()],), (None, {"nested": [Smuggled()]})]:
            with self.assertRaises(pb.RemoteError) as refused:
                await perspective.callRemote("watch", *args)
            self.assertIn("refused to unjelly tests.test_pb_sessions.Smuggled", str(refused.exception))
            self.assertEqual(remote_type(refused.exception), "buildnotify.protocol.BadArgument")
            self.assertEqual(await perspective.callRemote("ping"), "pong")
        with self.assertRaises(pb.RemoteError) as refused:  # the root object refuses it too
            await client.login(Smuggled(), "token", None)  # type: ignore[arg-type]
        self.assertIn("refused to unjelly tests.test_pb_sessions.Smuggled", str(refused.exception))
        self.assertEqual(remote_type(refused.exception), "buildnotify.protocol.BadArgument")
        self.assertFalse(closed(client))
        await perspective.callRemote("watch", [WIDGET])
        event_id = await self.hub.build(WIDGET, 1, "failure")
        await wait_until(lambda: mind.events, timeout=5, what="the event")
        self.assertEqual(mind.event_ids, [event_id])

    def test_only_pb_and_plain_types_are_allowed(self) -> None:
        for name in (b"os.system", b"buildnotify.events.BuildEvent", b"tests.test_pb_sessions.Smuggled"):
            self.assertFalse(SECURITY.isTypeAllowed(name), name)
            self.assertFalse(SECURITY.isTypeAllowed(name.decode()), name)
        for name in (b"twisted.spread.pb.CopyableFailure", b"remote", b"local", b"dictionary", b"list"):
            self.assertTrue(SECURITY.isTypeAllowed(name), name)
        self.assertTrue(jelly.SecurityOptions().isTypeAllowed(b"os.system"))  # why ours is stricter


class LoginTests(PBTestCase):
    async def test_wrong_tokens_then_a_throttle(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock, login_failures=3, login_window=60.0)
        token = await add_developer(self.store, "alice", logins=["alice"])
        client = await self.client()
        for name, attempt in [("alice", "wrong"), ("nobody", token), ("alice", token + "x")]:
            with self.assertRaises(pb.RemoteError) as refused:
                await client.login(name, attempt, None)
            self.assertIn("unknown developer or wrong token", str(refused.exception))
            self.assertNotIn(token, str(refused.exception))  # never echoes a token
        for _ in range(2):  # even the right token, from any connection of the address
            with self.assertRaises(pb.RemoteError) as throttled:
                await (await self.client()).login("alice", token, None)
            self.assertIn("too many failed logins from 127.0.0.1; retry in 60 s", str(throttled.exception))
        # (new connections below: the ones without a session have had their login timeout)
        clock.advance(60.0 - EPSILON)
        throttled = await refusal(
            Deferred.fromCoroutine((await self.client()).login("alice", token, None)),
            "logins throttled until the window ends",
        )
        self.assertIn("too many failed logins from 127.0.0.1; retry in 1 s", str(throttled))
        clock.advance(2 * EPSILON)  # the window passes
        session = await (await self.client()).login("alice", token, None)
        self.assertEqual((await session.callRemote("whoami"))["developer"], "alice")

    async def test_anonymous_access_can_be_turned_off(self) -> None:
        await self.start(anonymous=False)
        client = await self.client()
        for mind in (RecordingMind(), None):
            with self.assertRaises(pb.RemoteError) as refused:
                await client.anonymous(mind)
            self.assertIn("anonymous access is turned off on this hub", str(refused.exception))
        token = await add_developer(self.store, "alice")
        session = await client.login("alice", token, None)
        self.assertEqual(await session.callRemote("ping"), "pong")


class MuteTests(PBTestCase):
    async def test_a_muted_project_is_not_pushed_and_its_alerts_wait(self) -> None:
        await self.start()
        token = await add_developer(self.store, "alice", logins=["alice"])
        mind = RecordingMind()
        client = await self.client()
        alice = await client.login("alice", token, mind)
        await alice.callRemote("watch", [WIDGET, GADGET])
        muted = await alice.callRemote("mute", WIDGET)
        self.assertEqual(muted["project"], WIDGET)
        broke = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        marker = await self.hub.build(GADGET, 1, "failure")  # not muted: once here, so is anything before it
        await wait_until(lambda: marker in mind.event_ids, what=f"the gadget event {marker}")
        self.assertEqual((mind.event_ids, mind.alerts), ([marker], []))
        self.assertEqual([a["event"]["id"] for a in await alice.callRemote("alerts")], [broke])
        self.assertIsNotNone((await alice.callRemote("settings"))[WIDGET]["muted_until"])

        # still muted after reconnecting: the pending alert is not pushed
        client.disconnect()
        mind = RecordingMind()
        client = await self.client()
        alice = await client.login("alice", token, mind)
        await alice.callRemote("watch")
        still = await self.hub.build(WIDGET, 2, "failure", author=AUTHOR)
        marker = await self.hub.build(GADGET, 2, "failure")  # the barrier again
        await wait_until(lambda: marker in mind.event_ids, what=f"the gadget event {marker}")
        self.assertEqual((mind.event_ids, mind.alerts), ([marker], []))

        self.assertTrue(await alice.callRemote("unmute", WIDGET))
        again = await self.hub.build(WIDGET, 3, "failure", author=AUTHOR)
        await wait_until(
            lambda: again in mind.event_ids and mind.alerts, what=f"event {again} and its alert after unmute"
        )
        await delivered(alice)  # a muted event or alert pushed late would be here by now
        self.assertEqual(mind.event_ids, [marker, again])
        self.assertEqual([a["event"]["id"] for a in mind.alerts], [again])
        self.assertEqual([a["event"]["id"] for a in await alice.callRemote("alerts")], [broke, still, again])

    async def test_a_mute_for_some_minutes_runs_out(self) -> None:
        clock = clock_at(T0)
        await self.start(clock=clock)
        token = await add_developer(self.store, "alice", logins=["alice"])
        mind = RecordingMind()
        alice = await (await self.client()).login("alice", token, mind)
        await alice.callRemote("watch", [WIDGET, GADGET])
        muted = await alice.callRemote("mute", WIDGET, 20)
        self.assertEqual(muted["muted_until"], (T0 + timedelta(minutes=20)).isoformat())
        hidden = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        marker = await self.hub.build(GADGET, 1, "failure")  # not muted: once here, so is anything before it
        await wait_until(lambda: marker in mind.event_ids, what=f"the gadget event {marker}")
        self.assertEqual((mind.event_ids, mind.alerts), ([marker], []), "muted, yet pushed")
        clock.advance(20 * 60 - 1)  # a second before the mute runs out
        still = await self.hub.build(WIDGET, 2, "failure", author=AUTHOR)
        later = await self.hub.build(GADGET, 2, "failure")
        await wait_until(lambda: later in mind.event_ids, what=f"the gadget event {later}")
        self.assertEqual(
            (mind.event_ids, mind.alerts), ([marker, later], []), "pushed before the mute ran out"
        )
        clock.advance(1)  # it runs out
        shown = await self.hub.build(WIDGET, 3, "failure", author=AUTHOR)
        await wait_until(
            lambda: shown in mind.event_ids and mind.alerts,
            what=f"event {shown} and its alert after the mute",
        )
        self.assertEqual(mind.event_ids, [marker, later, shown])
        self.assertEqual([a["event"]["id"] for a in mind.alerts], [shown])
        self.assertEqual([a["event"]["id"] for a in await alice.callRemote("alerts")], [hidden, still, shown])
