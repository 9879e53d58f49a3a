"""A minimal PB client for tests: connect to a running hub over loopback,
log in, and record everything pushed to the mind."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import deferLater
from twisted.spread import pb
from twisted.trial import unittest

from buildnotify.protocol import SECURITY
from buildnotify.store import accounts

#: seconds on a task.Clock: "just before" and "just after" a deadline
EPSILON = 0.001


class RecordingMind(pb.Referenceable):
    """Records every call the hub makes; answers pings unless told not to."""

    def __init__(self, answer_pings: bool = True) -> None:
        self.events: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.goodbyes: list[str] = []
        self.pings = 0
        self.pages = 0
        self.answer_pings = answer_pings

    def remote_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def remote_events(self, page: bytes) -> None:
        """A catch-up page (docs/protocol.md): events as if pushed one by one."""
        self.pages += 1
        self.events.extend(json.loads(page))

    def remote_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)

    def remote_claim(self, claim: dict[str, Any]) -> None:
        self.claims.append(claim)

    def remote_goodbye(self, reason: str) -> None:
        self.goodbyes.append(reason)

    def remote_ping(self) -> Any:
        self.pings += 1
        return "pong" if self.answer_pings else Deferred()  # a hung client never answers

    @property
    def event_ids(self) -> list[int]:
        return [e["id"] for e in self.events]


class Client:
    """One PB connection to the hub."""

    def __init__(self, factory: pb.PBClientFactory, broker: pb.Broker) -> None:
        self.factory = factory
        self.broker = broker

    @classmethod
    async def connect(cls, testcase: unittest.TestCase, address: str, security: Any = SECURITY) -> Client:
        """``security``: what this client's jelly lets through (Twisted's
        default lets a careless or hostile client send any type)."""
        factory = pb.PBClientFactory(security=security)
        broker = await clientFromString(reactor, address).connect(factory)
        client = cls(factory, broker)
        testcase.addCleanup(client.disconnect)
        return client

    async def login(self, name: str, token: str, mind: pb.Referenceable | None = None) -> pb.RemoteReference:
        root = await self.factory.getRootObject()
        return await root.callRemote("login", name, token, mind)

    async def anonymous(self, mind: pb.Referenceable | None = None) -> pb.RemoteReference:
        root = await self.factory.getRootObject()
        return await root.callRemote("loginAnonymous", mind)

    def disconnect(self) -> None:
        if self.broker.transport is not None and self.broker.transport.connected:
            self.broker.transport.loseConnection()


async def add_developer(store: Any, name: str, emails: Iterable[str] = (), logins: Iterable[str] = ()) -> str:
    """Create a developer account and return its token."""

    def write(conn: Any) -> str:
        accounts.add_developer(conn, name, emails=emails, logins=logins)
        return accounts.issue_token(conn, name)

    return await store.write(write)


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str | Callable[[], str] = "condition"
) -> None:
    """Poll the reactor until ``predicate()``; fail after ``timeout`` seconds,
    saying ``what`` was missing (a callable: computed at the failure, so it can
    name the missing event ids and the client's position)."""
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
            )
        await deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def missing_events(expected: list[int], received: list[int], position: object = None) -> Callable[[], str]:
    """A ``what`` for :func:`wait_until`: which ids are missing or repeated,
    and where the client stood."""

    def describe() -> str:
        missing = sorted(set(expected) - set(received))
        extra = sorted(set(received) - set(expected))
        repeated = sorted({i for i in received if received.count(i) > 1})
        where = position() if callable(position) else position
        return (
            f"every event: missing {missing}, unexpected {extra}, repeated {repeated}, "
            f"order ok: {received == sorted(received)}, client position {where}"
        )

    return describe


async def answered(perspective: pb.RemoteReference, what: str) -> None:
    """Ping the hub through ``perspective``; fail saying ``what`` was expected
    unless the session answers."""
    try:
        answer = await perspective.callRemote("ping")
    except Exception as e:
        raise AssertionError(f"{what}, but a ping failed: {e!r}") from None
    if answer != "pong":
        raise AssertionError(f"{what}, but a ping was answered {answer!r}")


async def delivered(*perspectives: pb.RemoteReference) -> None:
    """A barrier: ping the hub through each perspective. PB delivers in order
    on a connection, so once the answer is here, everything the hub sent on
    that connection before it (events, alerts, a duplicate) is here too."""
    for perspective in perspectives:
        await answered(perspective, "a barrier ping on a working session")


async def refusal(call: Deferred[Any], what: str) -> pb.RemoteError:
    """The ``pb.RemoteError`` the call fails with; fail saying ``what`` was
    expected if it is answered."""
    try:
        answer = await call
    except pb.RemoteError as e:
        return e
    raise AssertionError(f"{what}, but the call was answered {answer!r}")


async def pause(seconds: float) -> None:
    """Real time passing. Only where nothing can be awaited instead: the
    hub's timeouts run on a task.Clock, and "nothing more arrived" is shown
    with :func:`delivered` or a marker event."""
    await deferLater(reactor, seconds, lambda: None)
