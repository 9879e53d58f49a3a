"""Logging in over PB: the root object each connection gets, token
checking against hashes, and a per-peer limit on failed logins.

PB's stock login is an MD5 challenge-response, which needs the plaintext
password on the server; we store only token hashes, so the token travels
inside the (TLS, off loopback) connection like an HTTP bearer token and is
hashed on arrival.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from twisted.cred import credentials, error
from twisted.cred.checkers import ANONYMOUS, ICredentialsChecker
from twisted.internet.defer import Deferred
from twisted.spread import jelly, pb
from zope.interface import implementer

from buildnotify.hub.sessions import ClientlessSession
from buildnotify.hub.wire import refusal
from buildnotify.store import accounts

if TYPE_CHECKING:
    from buildnotify.hub.service import PBService


class LoginFailed(pb.Error):
    """A login that did not succeed; the message says why, never the token."""


@implementer(ICredentialsChecker)
class TokenChecker:
    """Developer name + token; the avatar id is ``(developer id, name)``."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, store: Any) -> None:
        self.store = store

    def requestAvatarId(self, creds: credentials.IUsernamePassword) -> Deferred:  # noqa: N802
        name = creds.username.decode("utf-8", "replace")
        token = creds.password.decode("utf-8", "replace")
        d = self.store.read(accounts.check_token, name=name, token=token)

        def checked(developer_id: int | None) -> tuple[int, str]:
            if developer_id is None:
                raise error.UnauthorizedLogin("unknown developer or wrong token")
            return (developer_id, name)

        return d.addCallback(checked)


class LoginThrottle:
    """At most ``failures`` failed logins per peer address in ``window``
    seconds; past that, logins from the address are refused unchecked."""

    MAX_PEERS = 1000

    def __init__(self, clock: Any, failures: int = 5, window: float = 60.0) -> None:
        self.clock = clock
        self.failures = failures
        self.window = window
        self._recent: dict[str, collections.deque[float]] = {}

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
        if len(recent) < self.failures:
            return 0.0
        return max(0.0, recent[0] + self.window - self.clock.seconds())

    def failed(self, peer: str) -> None:
        if len(self._recent) > self.MAX_PEERS:  # a scan from many addresses: forget the expired
            for other in list(self._recent):
                self._trim(other)
        recent = self._trim(peer)
        recent.append(self.clock.seconds())
        self._recent[peer] = recent


class LoginGate(pb.Referenceable, pb._JellyableAvatarMixin):
    """The root object of one PB connection: ``login`` and ``loginAnonymous``.

    (``_JellyableAvatarMixin`` is how PB's own portal wrapper hands out
    avatars and runs their logout on disconnect; we reuse it.)"""

    def __init__(self, service: PBService, broker: pb.Broker) -> None:
        self.service = service
        self.broker = broker

    def remoteMessageReceived(self, broker: pb.Broker, message: str, args: Any, kw: Any) -> Any:  # noqa: N802
        try:
            return super().remoteMessageReceived(broker, message, args, kw)
        except jelly.InsecureJelly as e:  # a clear error for the client, no traceback in our log
            raise LoginFailed(refusal(e)) from None

    def _peer(self) -> str:
        peer = self.broker.transport.getPeer()
        return getattr(peer, "host", str(peer))

    def remote_login(self, name: str, token: str, mind: pb.RemoteReference | None = None) -> Deferred:
        peer = self._peer()
        wait = self.service.throttle.retry_after(peer)
        if wait:
            raise LoginFailed(f"too many failed logins from {peer}; retry in {wait:.0f} s")
        if not isinstance(name, str) or not isinstance(token, str):
            raise LoginFailed("login takes a developer name and a token, both strings")
        creds = credentials.UsernamePassword(name.encode(), token.encode())
        d = self.service.portal.login(creds, mind, pb.IPerspective)

        def refused(failure: Any) -> None:
            if failure.check(error.UnauthorizedLogin):
                self.service.throttle.failed(peer)
                self.service.log.info("login refused for %r from %s", name, peer)
                raise LoginFailed("unknown developer or wrong token")
            failure.raiseException()

        d.addErrback(refused)
        d.addCallback(self._logged_in)
        return d

    def remote_loginAnonymous(self, mind: pb.RemoteReference | None = None) -> Deferred:  # noqa: N802
        if not self.service.settings.anonymous:
            raise LoginFailed("anonymous access is turned off on this hub")
        d = self.service.portal.login(credentials.Anonymous(), mind, pb.IPerspective)
        d.addCallback(self._logged_in)
        return d

    def _logged_in(self, result: tuple[Any, Any, Any]) -> Any:
        _, avatar, _ = result
        if isinstance(avatar, ClientlessSession):
            self.service.clientless_login(self.broker, avatar)
        return self._cbLogin(result)


@implementer(pb.IPBRoot)
class LoginRoot:
    """Gives each new connection its own :class:`LoginGate`."""

    def __init__(self, service: PBService) -> None:
        self.service = service

    def rootObject(self, broker: pb.Broker) -> LoginGate:  # noqa: N802
        return LoginGate(self.service, broker)


__all__ = ["ANONYMOUS", "LoginFailed", "LoginGate", "LoginRoot", "LoginThrottle", "TokenChecker"]
