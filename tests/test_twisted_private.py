"""The private parts of Twisted the hub reads, each kept only with a
fallback to public API. If a Twisted release renames one, a test here fails
and says what the hub lost; the hub itself keeps working on the fallback."""

from __future__ import annotations

from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import StringTransport
from twisted.spread import banana, pb
from twisted.trial import unittest

from buildnotify.hub import auth, outbox
from buildnotify.hub.connection import HubBroker
from tests.pbclient import wait_until


class PrivateTwistedTests(unittest.TestCase):
    def test_pb_still_hands_out_avatars_with_its_own_helper(self) -> None:
        self.assertTrue(
            hasattr(pb, "_JellyableAvatarMixin") and hasattr(pb.Broker(), "_localCleanup"),
            "pb._JellyableAvatarMixin or Broker._localCleanup is gone: the hub falls back to "
            "auth._PublicAvatarMixin, and a session logs out on disconnect only, no longer "
            "when its client drops the perspective reference",
        )
        self.assertIs(auth.AvatarMixin, pb._JellyableAvatarMixin)

    def test_the_public_fallback_logs_out_on_disconnect(self) -> None:
        logged_out = []
        gate = auth._PublicAvatarMixin()
        gate.broker = pb.Broker()
        avatar = gate._cbLogin((pb.IPerspective, pb.Avatar(), lambda: logged_out.append(True)))
        self.assertIsInstance(avatar, pb.AsReferenceable)
        gate.broker.connectionLost(None)
        self.assertEqual(logged_out, [True])

    async def test_tcp_connections_still_have_what_the_direct_send_reads(self) -> None:
        accepted: list[protocol.Protocol] = []

        class Accept(protocol.Protocol):
            def connectionMade(self) -> None:  # noqa: N802
                accepted.append(self)

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(Accept)
        )
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(protocol.Protocol)
        )
        self.addCleanup(client.transport.loseConnection)
        await wait_until(lambda: accepted, what="the accepted connection")
        transport = accepted[0].transport
        self.addCleanup(transport.loseConnection)
        missing = [name for name in outbox._DIRECT_SEND_ATTRIBUTES if not hasattr(transport, name)]
        self.assertEqual(
            missing,
            [],
            "tcp.Connection lacks what the outbox's direct send reads: fan-out falls back to "
            "transport.write (one more epoll registration and doWrite per connection per turn)",
        )
        self.assertTrue(outbox.direct_send_works(transport) or not outbox._DIRECT_SEND_ENABLED)

    def test_banana_still_shows_the_expression_it_is_receiving(self) -> None:
        broker = HubBroker(isClient=False)
        broker.makeConnection(StringTransport())
        self.assertTrue(
            hasattr(broker, "buffer") and hasattr(broker, "listStack"),
            "Banana's buffer/listStack are gone: the hub cannot bound a half-received message",
        )
        header = bytearray()
        banana.int2b128(1000, header.extend)
        broker.dataReceived(bytes(header) + banana.LIST + banana.encode(b"x" * 500) * 3)
        self.assertGreaterEqual(broker.pending_bytes(), 1500)
        broker.dataReceived(b"\x05")  # half a string's header: bytes held in buffer
        self.assertGreaterEqual(broker.pending_bytes(), 1501)
