"""Helpers for driving the tray against a real hub on loopback: a tray
whose reactor side runs in the test's thread, and an outage of the hub's
PB side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString

from buildnotify_tray.bridge import Bridge
from buildnotify_tray.client import TrayClient
from buildnotify_tray.model import TrayModel
from buildnotify_tray.view import TrayView
from tests.test_client import fast_retries


class Tray:
    """Model, view and client of one tray, in one thread (the bridge then
    delivers directly); the menu's commands go straight to the client."""

    def __init__(self, hub_address: str, note: str | None = "looking", **options: Any) -> None:
        self.model = TrayModel(user=options.get("user"), hub=hub_address, clock=reactor)
        self.bridge = Bridge(self.model)
        self.client = TrayClient(
            self.bridge.send,
            hub=hub_address,
            reactor=reactor,
            retry_policy=fast_retries(),
            reconnect_spread=0.05,
            **options,
        )
        self.opened: list[str] = []
        self.view = TrayView(self.model, self.client, open_url=self.opened.append, ask_note=lambda _: note)
        self.menu = self.view.menu

    def texts(self) -> list[str]:
        return [e.text for e in self.model.entries()]

    async def close(self) -> None:
        await self.client.stop()
        self.view.close()


async def pb_outage(hub: Any) -> Callable[[], Awaitable[None]]:
    """Take the hub's PB side down (listener closed, every client dropped;
    webhooks still work); returns what brings it back on the same port."""
    service, address = hub.service, hub.pb_address
    await hub.pb_port.stopListening()
    for session in service.sessions:
        service.drop(session, "the hub is restarting")
    port = int(address.rsplit(":", 1)[1])

    async def restore() -> None:
        endpoint = serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
        hub.pb_port = await endpoint.listen(service.factory())

    return restore
