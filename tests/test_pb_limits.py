"""Adversarial PB clients over real loopback TCP: a flood of calls that
never reads its answers, pre-login garbage and huge messages, logins that
never come, idle sessions, too many connections, a burst of wrong logins,
and a failing observer. Each asserts what the attacker gets and that a
normal client and a webhook are still served while the attack runs.

Timeouts (login, idle) run on a ``task.Clock``; the attacks themselves use
real sockets.
"""

from __future__ import annotations

import gc
import socket
from typing import Any

from twisted.internet import protocol, reactor, task
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.spread import banana, pb

from buildnotify.hub import sessions
from buildnotify.store import accounts
from tests.pbclient import Client, RecordingMind, add_developer, pause, wait_until
from tests.support import per_backend
from tests.test_pb import PBTestCase
from tests.test_pb_sessions import closed, remote_type

WIDGET = "acme/widget"


class RawPeer(protocol.Protocol):
    """A TCP peer that speaks no PB: it records what the hub sends and when
    the hub closes the connection."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.received += data

    def connectionLost(self, reason: Any) -> None:  # noqa: N802
        self.lost.callback(None)


class AdversaryTests(PBTestCase):
    """Every attack, on both databases (per_backend, at the end)."""

    __test__ = False

    async def raw(self) -> RawPeer:
        host, port = self.hub.hub.pb_address.split(":")[1:]
        peer = RawPeer()
        await TCP4ClientEndpoint(reactor, host, int(port)).connect(protocol.Factory.forProtocol(lambda: peer))
        self.addCleanup(lambda: peer.transport.abortConnection() if not peer.lost.called else None)
        return peer

    async def still_served(self, number: int) -> None:
        """A normal client watching the project gets a webhook's event, and the
        webhook is answered: the attack running meanwhile holds up nobody."""
        mind = RecordingMind()
        perspective = await (await self.client()).anonymous(mind)
        self.keep = perspective
        await perspective.callRemote("watch", [WIDGET])
        posted = await self.hub.build(WIDGET, number, "failure")
        await wait_until(lambda: posted in mind.event_ids, what=f"event {posted} on a normal client")

    def connection_of(self, client: Client) -> Any:
        port = client.broker.transport.getHost().port
        [connection] = [c for c in self.hub.hub.service.connections if c.getPeer().port == port]
        return connection

    async def test_a_flood_of_calls_that_never_reads_is_dropped_at_the_byte_limit(self) -> None:
        queue_bytes = 128 * 1024
        await self.start(queue_bytes=queue_bytes, calls_in_flight=16)
        for number in range(1, 41):  # a history answer of ~40 events: tens of KB
            await self.hub.build(WIDGET, number, "failure", url="https://ci.example.com/" + "u" * 500)
        mind = RecordingMind()
        attacker = await self.client()
        perspective = await attacker.anonymous(mind)
        connection = self.connection_of(attacker)
        [session] = connection.sessions
        # small socket buffers on both sides, so the hub's own queue is what fills up
        attacker.broker.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        attacker.broker.transport.pauseProducing()  # the attacker never reads

        answers: list[Deferred[Any]] = []
        sent = 0
        while session.ended is None and sent < 20_000:
            for _ in range(200):
                answers.append(perspective.callRemote("history", None, 1000))
            sent += 200
            await pause(0.01)  # pacing, not a wait: the reactor moves the bytes, the loop ends on the drop
        self.assertEqual(session.ended, "too slow", f"not dropped after {sent} calls")
        outbox = connection.outbox
        self.assertLessEqual(
            outbox.peak_bytes, queue_bytes + sessions.ANSWER_BYTES, "the hub queued past its limit"
        )
        await self.still_served(1000)

        attacker.broker.transport.resumeProducing()  # it reads again: the goodbye is there
        await wait_until(lambda: closed(attacker), what="the hub to close the attacker's connection")
        self.assertEqual(mind.goodbyes, ["too slow"])
        results = await DeferredList(answers, consumeErrors=True)
        failures = {_kind(r) for ok, r in results if not ok}
        # what was queued for it went with the connection; nothing else went wrong
        self.assertLessEqual(failures, {"PBConnectionLost", "buildnotify.protocol.TooBusy"})

    async def test_calls_past_the_limit_in_flight_are_refused_at_once(self) -> None:
        await self.start(calls_in_flight=3)
        gate: Deferred[None] = Deferred()
        real_read = self.store.read

        async def held(query: Any, **kwargs: Any) -> Any:
            await gate
            return await real_read(query, **kwargs)

        perspective = await (await self.client()).anonymous(None)
        self.patch(self.store, "read", lambda query, **kw: Deferred.fromCoroutine(held(query, **kw)))
        calls = [perspective.callRemote("history", None, 5) for _ in range(5)]
        refused = []
        for call in calls[3:]:
            with self.assertRaises(pb.RemoteError) as error:
                await call  # answered while the first three still wait on the store
            refused.append(remote_type(error.exception))
        self.assertEqual(refused, ["buildnotify.protocol.TooBusy"] * 2)
        self.assertFalse(any(c.called for c in calls[:3]))
        gate.callback(None)
        self.assertEqual(await DeferredList(calls[:3]), [(True, [])] * 3)
        self.assertEqual(await perspective.callRemote("history", None, 5), [])  # room again

    async def test_an_unterminated_list_before_login_is_cut_off(self) -> None:
        await self.start()
        peer = await self.raw()
        chunk = banana.encode(b"x" * 1000)
        header = _list_header(600_000)
        peer.transport.write(header)
        sent = len(header)
        while not peer.lost.called and sent < 10 * 1024 * 1024:
            peer.transport.write(chunk * 16)
            sent += len(chunk) * 16
            await pause(0.001)  # pacing, not a wait: the reactor moves the bytes, the loop ends on the close
        await wait_until(lambda: peer.lost.called, what="the hub to close the garbage connection")
        self.assertLess(sent, 1024 * 1024, "the hub took a megabyte of one unfinished message")
        self.assertEqual(self.flushLoggedErrors(), [])  # one log line, no traceback
        await self.still_served(1)

    async def test_bytes_that_are_not_pb_close_the_connection_quietly(self) -> None:
        await self.start()
        peer = await self.raw()
        peer.transport.write(b"GET / HTTP/1.1\r\nHost: hub\r\n" + b"X" * 200 + b"\r\n\r\n")
        await peer.lost
        self.assertEqual(self.flushLoggedErrors(), [])
        await self.still_served(1)

    async def test_a_connection_that_never_logs_in_is_closed_after_the_timeout(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock, login_timeout=10.0)
        peer = await self.raw()
        await wait_until(lambda: peer.received, what="the hub's banana greeting")
        clock.advance(9.9)
        self.assertFalse(peer.lost.called, "closed before the login timeout")
        clock.advance(0.2)
        await wait_until(lambda: peer.lost.called, what="the hub to close the silent connection")

    async def test_a_connection_whose_sessions_all_ended_must_log_in_again(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock, login_timeout=10.0)
        client = await self.client()
        perspective = await client.anonymous(None)
        self.assertEqual(await perspective.callRemote("ping"), "pong")
        del perspective  # PB tells the hub the reference is gone: the session logs out
        gc.collect()
        await wait_until(
            lambda: not self.hub.hub.service.sessions, what="the logout of the dropped reference"
        )
        clock.advance(9.9)
        self.assertFalse(closed(client), "closed before the login timeout")
        clock.advance(0.2)
        await wait_until(lambda: closed(client), what="the hub to close the connection nobody uses")

    async def test_a_huge_message_after_login_closes_the_connection(self) -> None:
        await self.start(max_message=64 * 1024)
        client = await self.client()
        perspective = await client.anonymous(None)
        self.assertEqual(await perspective.callRemote("history", "x" * 200), [])  # a long name is fine
        with self.assertRaises(pb.PBConnectionLost):
            await perspective.callRemote("history", "x" * 100_000)
        await self.still_served(1)

    async def test_a_clientless_session_that_stays_silent_is_ended(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock, idle_timeout=300.0)
        client = await self.client()
        perspective = await client.anonymous(None)
        clock.advance(299)
        self.assertEqual(await perspective.callRemote("ping"), "pong")  # a call resets the timer
        clock.advance(299)
        self.assertFalse(closed(client))
        clock.advance(2)
        await wait_until(lambda: closed(client), what="the idle session's connection to close")
        self.assertEqual(self.hub.hub.service.sessions, [])

    async def test_connections_from_one_address_are_capped(self) -> None:
        await self.start(connections_per_address=3)
        clients = [await self.client() for _ in range(3)]
        for client in clients:
            self.assertEqual(await (await client.anonymous(None)).callRemote("ping"), "pong")
        extra = await self.client()
        await wait_until(lambda: closed(extra), what="the fourth connection to be refused")
        clients[0].disconnect()
        await wait_until(lambda: len(self.hub.hub.service.connections) == 2, what="the hub to see the close")
        again = await self.client()
        self.assertEqual(await (await again.anonymous(None)).callRemote("ping"), "pong")

    async def test_a_burst_of_wrong_logins_checks_only_the_allowed_few(self) -> None:
        await self.start(login_failures=5, connections_per_address=40, calls_in_flight=16)
        await add_developer(self.store, "alice")
        checked = []
        real_read = self.store.read

        def counting(query: Any, **kwargs: Any) -> Any:
            if query is accounts.check_token:
                checked.append(kwargs["name"])
            return real_read(query, **kwargs)

        self.patch(self.store, "read", counting)
        roots = []
        for _ in range(32):
            roots.append(await (await self.client()).factory.getRootObject())
        attempts = [
            root.callRemote("login", "alice", f"wrong-{i}", None) for root in roots for i in range(16)
        ]
        served = Deferred.fromCoroutine(self.still_served(1))
        results = await DeferredList(attempts, consumeErrors=True)
        await served
        self.assertEqual(len(results), 512)
        self.assertTrue(all(not ok for ok, _ in results), "a wrong token logged in")
        self.assertLessEqual(len(checked), 5, f"{len(checked)} of 512 wrong logins reached the database")
        messages = {r.getErrorMessage().split(";")[0] for _, r in results}
        self.assertEqual(
            messages, {"unknown developer or wrong token", "too many failed logins from 127.0.0.1"}
        )

    async def test_an_observer_that_fails_does_not_stop_the_others(self) -> None:
        await self.start()
        broken_mind, mind = RecordingMind(), RecordingMind()
        broken = await (await self.client()).anonymous(broken_mind)
        await broken.callRemote("watch", [WIDGET])
        [broken_session] = self.hub.hub.service.sessions

        def explode(*args: Any) -> None:
            raise RuntimeError("injected")

        self.patch(broken_session, "deliver_event", explode)
        first = await self.hub.build(WIDGET, 1, "failure")
        ok = await (await self.client()).anonymous(mind)
        await ok.callRemote("watch", [WIDGET], first - 1)
        second = await self.hub.build(WIDGET, 2, "failure")
        await wait_until(
            lambda: mind.event_ids == [first, second], what="both events on the healthy observer"
        )
        self.assertEqual(broken_session.ended, "the hub could not push to this session")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 0)  # logged through logging, once

    async def test_an_outbox_that_fails_does_not_stop_the_others(self) -> None:
        await self.start()
        minds = [RecordingMind() for _ in range(3)]
        clients = [await self.client() for _ in minds]
        perspectives = [await c.anonymous(m) for c, m in zip(clients, minds, strict=True)]
        for perspective in perspectives:
            await perspective.callRemote("watch", [WIDGET])
        failing = self.connection_of(clients[0]).outbox

        def explode() -> None:
            raise OSError("injected")

        self.patch(failing, "flush", explode)
        posted = await self.hub.build(WIDGET, 1, "failure")
        for mind in minds[1:]:
            await wait_until(lambda m=mind: m.event_ids == [posted], what="the event on the healthy clients")
        await wait_until(lambda: closed(clients[0]), what="the failing connection to close")


per_backend(AdversaryTests, globals())


def _kind(failure: Any) -> str:
    """The class a failed call failed with: the hub's, or our own side's."""
    if isinstance(failure, pb.CopiedFailure):
        return failure.type.decode() if isinstance(failure.type, bytes) else str(failure.type)
    return type(failure.value).__name__


def _list_header(length: int) -> bytes:
    """Banana's header of a list of ``length`` items (the items never come)."""
    out = bytearray()
    banana.int2b128(length, out.extend)
    return bytes(out) + banana.LIST
