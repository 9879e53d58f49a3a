"""Logging in over PB: the root object each connection gets, token
checking against hashes, and a per-peer limit on failed logins.

PB's stock login is an MD5 challenge-response, which needs the plaintext
password on the server; we store only token hashes, so the token travels
inside the (TLS, off loopback) connection like an HTTP bearer token and is
hashed on arrival.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from twisted.cred import credentials, error
from twisted.cred.checkers import ANONYMOUS, ICredentialsChecker
from twisted.internet.defer import Deferred
from twisted.spread import pb
from zope.interface import implementer

from buildnotify.hub import arguments
from buildnotify.logtext import printable
from buildnotify.protocol import LoginFailed
from buildnotify.store import accounts

if TYPE_CHECKING:
    import logging

    from twisted.cred.portal import Portal

    from buildnotify.hub.connection import HubConnection
    from buildnotify.hub.settings import PBSettings


class LoginHost(Protocol):
    """What the login gate needs of the service (hub/service.py)."""

    settings: PBSettings
    portal: Portal
    throttle: LoginThrottle
    log: logging.Logger


@implementer(ICredentialsChecker)
class TokenChecker:
    """Developer name + token; the avatar id is ``(developer id, name, token
    hash)``: the hash tells a session whether its token has been replaced."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, store: Any) -> None:
        self.store = store

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred:  # noqa: N802
        name = creds.username.decode("utf-8", "replace")
        token = creds.password.decode("utf-8", "replace")
        d = self.store.read(accounts.check_token, name=name, token=token)

        def checked(developer_id: int | None) -> tuple[int, str, str]:
            if developer_id is None:
                raise error.UnauthorizedLogin("unknown developer or wrong token")
            return (developer_id, name, accounts.hash_token(token))

        return d.addCallback(checked)


class LoginThrottle:
    """At most ``failures`` failed logins per peer address in ``window``
    seconds; past that, logins from the address are refused unchecked.

    An attempt counts from the moment it starts: a burst of concurrent
    logins from one address checks at most ``failures`` tokens against the
    database, however many arrive before the first one fails."""

    MAX_PEERS = 1000

    def __init__(self, clock: Any, failures: int = 5, window: float = 60.0) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self._recent: dict[str, collections.deque[float]] = {}
        self._checking: collections.Counter[str] = collections.Counter()  # attempts not yet decided

    def _trim(self, peer: str) -> collections.deque[float]:
        recent = self._recent.get(peer, collections.deque())
        now = self.clock.seconds()
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        if recent:
            self._recent[peer] = recent
        else:
            self._recent.pop(peer, None)
        return recent

    def retry_after(self, peer: str) -> float:
        """Seconds until ``peer`` may try again (0: now)."""
        recent = self._trim(peer)
        if len(recent) + self._checking[peer] < self.failures:
            return 0.0
        if len(recent) < self.failures:  # the slots are taken by attempts still being checked
            return 1.0
        return max(1.0, recent[0] + self.window - self.clock.seconds())

    def begin(self, peer: str) -> None:
        """An attempt starts (call :meth:`succeeded` or :meth:`failed` when
        it is decided); raises LoginFailed when ``peer`` must wait."""
        wait = self.retry_after(peer)
        if wait:
            raise LoginFailed(f"too many failed logins from {peer}; retry in {wait:.0f} s")
        self._checking[peer] += 1

    def _decided(self, peer: str) -> None:
        self._checking[peer] -= 1
        if self._checking[peer] <= 0:
            del self._checking[peer]

    def succeeded(self, peer: str) -> None:
        self._decided(peer)

    def failed(self, peer: str) -> None:
        self._decided(peer)
        if len(self._recent) > self.MAX_PEERS:  # a scan from many addresses: forget the expired
            for other in list(self._recent):
                self._trim(other)
        recent = self._trim(peer)
        recent.append(self.clock.seconds())
        self._recent[peer] = recent


@dataclasses.dataclass(frozen=True)
class Client:
    """What the login gate passes to the realm as the "mind": the connection
    the login came over, and the client's own mind (None: clientless)."""

    connection: HubConnection
    mind: pb.RemoteReference | None


class _PublicAvatarMixin:
    """PB's avatar hand-out through its public API only, in case
    ``pb._JellyableAvatarMixin`` goes away: the session then logs out when
    the connection drops, not when the client drops its reference."""

    broker: pb.Broker

    def _cbLogin(self, result: tuple[Any, Any, Any]) -> Any:  # noqa: N802 - PB's name
        _, avatar, logout = result
        self.broker.notifyOnDisconnect(logout)
        return pb.AsReferenceable(avatar, "perspective")


#: PB's own helper (private) when it is there: it also logs a session out
#: when the client drops its perspective reference (tests/test_twisted_private.py)
AvatarMixin: type = getattr(pb, "_JellyableAvatarMixin", _PublicAvatarMixin)


class LoginGate(pb.Referenceable, AvatarMixin):
    """The root object of one PB connection: ``login`` and ``loginAnonymous``."""

    def __init__(self, service: LoginHost, broker: pb.Broker) -> None:
        self.service = service
        self.broker = broker

    @property
    def connection(self) -> HubConnection:
        return self.broker.connection  # type: ignore[attr-defined]  # set once the connection is made

    def remoteMessageReceived(self, broker: pb.Broker, message: str, args: Any, kw: Any) -> Any:  # noqa: N802
        message = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        return self.connection.answer(message, lambda: self._dispatch(broker, message, args, kw))

    def _dispatch(self, broker: pb.Broker, message: str, args: Any, kw: Any) -> Any:
        method = getattr(self, f"remote_{message}", None)
        if method is None:
            raise LoginFailed(
                f"no method {printable(message, 40)!r} before login; call login or loginAnonymous"
            )
        return arguments.call(broker, method, message, args, kw)

    def remote_login(self, name: str, token: str, mind: pb.RemoteReference | None = None) -> Deferred:
        name = arguments.text(name, "name")
        token = arguments.text(token, "token", limit=arguments.MAX_TOKEN)
        _require_mind(mind)
        peer = self.connection.peer
        self.service.throttle.begin(peer)
        creds = credentials.UsernamePassword(name.encode(), token.encode())
        d = self.service.portal.login(creds, Client(self.connection, mind), pb.IPerspective)

        def checked(result: Any) -> Any:
            self.service.throttle.succeeded(peer)
            return result

        def refused(failure: Any) -> None:
            if failure.check(error.UnauthorizedLogin):
                self.service.throttle.failed(peer)
                self.service.log.info("login refused for %s from %s", printable(name), peer)
                raise LoginFailed("unknown developer or wrong token")
            self.service.throttle.succeeded(peer)  # the token was right; the login failed later
            failure.raiseException()

        d.addCallbacks(checked, refused)
        d.addCallback(self._cbLogin)
        return d

    def remote_loginAnonymous(self, mind: pb.RemoteReference | None = None) -> Deferred:  # noqa: N802
        if not self.service.settings.anonymous:
            raise LoginFailed("anonymous access is turned off on this hub")
        _require_mind(mind)
        d = self.service.portal.login(credentials.Anonymous(), Client(self.connection, mind), pb.IPerspective)
        d.addCallback(self._cbLogin)
        return d


def _require_mind(mind: Any) -> None:
    if mind is not None and not isinstance(mind, pb.RemoteReference):
        raise LoginFailed("the mind must be a pb.Referenceable of the client's, or None")


@implementer(pb.IPBRoot)
class LoginRoot:
    """Gives each new connection its own :class:`LoginGate`."""

    def __init__(self, service: LoginHost) -> None:
        self.service = service

    def rootObject(self, broker: pb.Broker) -> LoginGate:  # noqa: N802
        return LoginGate(self.service, broker)


__all__ = ["ANONYMOUS", "Client", "LoginGate", "LoginRoot", "LoginThrottle", "TokenChecker"]
