"""Real receivers on loopback for the relays' tests: an HTTP endpoint whose
answer the test sets (500, 429 with Retry-After, 200 ...) and that records
every request, and an ESMTP server that keeps every mail it accepts."""

from __future__ import annotations

import dataclasses
from email import message_from_bytes
from email.message import Message
from typing import Any

from twisted.internet import defer, reactor
from twisted.mail import smtp
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer


@dataclasses.dataclass
class Request:
    headers: dict[str, str]  # lower-cased names
    body: bytes
    code: int  # what we answered


class Receiver(Resource):
    """POSTs answered with ``answer`` (code, headers); every one recorded."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answer: tuple[int, dict[str, str]] = (200, {})
        self.requests: list[Request] = []
        self.url = ""

    @classmethod
    def listen(cls, testcase: unittest.TestCase) -> Receiver:
        receiver = cls()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        receiver.url = f"http://127.0.0.1:{port.getHost().port}/hook/SECRET-PATH"
        return receiver

    def render_POST(self, request: Any) -> bytes:  # noqa: N802
        code, headers = self.answer
        self.requests.append(
            Request(
                {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
                request.content.read(),
                code,
            )
        )
        request.setResponseCode(code)
        for name, value in headers.items():
            request.setHeader(name, value)
        return b"ok" if code < 300 else b"nope"

    def deliveries(self, code: int | None = None) -> list[str]:
        """The X-Buildnotify-Delivery ids of the requests answered ``code`` (any)."""
        return [r.headers["x-buildnotify-delivery"] for r in self.requests if code is None or r.code == code]


@implementer(smtp.IMessage)
class _Mail:
    def __init__(self, server: MailServer, recipient: str) -> None:
        self.server, self.recipient, self.lines = server, recipient, []

    def lineReceived(self, line: bytes) -> None:  # noqa: N802
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred:  # noqa: N802
        self.server.mails.append((self.recipient, message_from_bytes(b"\n".join(self.lines))))
        return defer.succeed(None)

    def connectionLost(self) -> None:  # noqa: N802
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:  # noqa: N802
        return b"Received: by the test server"

    def validateFrom(self, helo: Any, origin: Any) -> Any:  # noqa: N802
        return origin

    def validateTo(self, user: Any) -> Any:  # noqa: N802
        address = str(user.dest)
        if address.startswith("nobody@"):
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Mail(self.server, address)


class MailServer:
    """Twisted's ESMTP server on loopback; ``mails``: (recipient, message)."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, Message]] = []
        self.port = 0

    @classmethod
    def listen(cls, testcase: unittest.TestCase) -> MailServer:
        server = cls()
        factory = smtp.SMTPFactory()
        factory.protocol = smtp.ESMTP
        factory.delivery = _Delivery(server)

        def build(addr: Any) -> Any:
            protocol = smtp.ESMTP()
            protocol.factory = factory
            protocol.delivery = factory.delivery
            return protocol

        factory.buildProtocol = build
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        server.port = port.getHost().port
        return server


class RefusingAuthServer:
    """A mail server on loopback that offers AUTH PLAIN (the password in the
    first line) and refuses every login (535): what a changed or mistyped
    SMTP password meets."""

    def __init__(self) -> None:
        self.port = 0
        self.lines: list[bytes] = []

    @classmethod
    def listen(cls, testcase: unittest.TestCase) -> RefusingAuthServer:
        from twisted.internet.protocol import Factory
        from twisted.protocols.basic import LineReceiver

        server = cls()

        class Refusing(LineReceiver):
            def connectionMade(self) -> None:  # noqa: N802
                self.sendLine(b"220 test ESMTP")

            def lineReceived(self, line: bytes) -> None:  # noqa: N802
                server.lines.append(line)
                verb = line.split(b" ", 1)[0].upper()
                if verb == b"EHLO":
                    self.sendLine(b"250-test")
                    self.sendLine(b"250 AUTH PLAIN")
                elif verb == b"QUIT":
                    self.sendLine(b"221 bye")
                    self.transport.loseConnection()
                else:
                    self.sendLine(b"535 5.7.8 authentication credentials invalid")

        port = reactor.listenTCP(0, Factory.forProtocol(Refusing), interface="127.0.0.1")
        testcase.addCleanup(port.stopListening)
        server.port = port.getHost().port
        return server
