"""The tray against a real hub on loopback: its client attached, webhooks
posted, the model, the menu and the notifications updated.

The reactor runs in the test's thread here (trial drives it), so the bridge
delivers directly; the app runs it in a thread of its own.
"""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from buildnotify.client import Ending, WatchClient
from buildnotify_tray.bridge import Bridge, Relay
from buildnotify_tray.model import Colour, Overall, TrayModel
from buildnotify_tray.view import TrayView
from tests.pbclient import Client, RecordingMind, add_developer, wait_until
from tests.support import RunningHub
from tests.test_client import fast_retries

WIDGET = "acme/widget"
AUTHOR = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


class TrayEndToEnd(unittest.TestCase):
    async def test_the_tray_follows_the_hub(self) -> None:
        hub = self.hub = await RunningHub.start(self)
        token = await add_developer(hub.hub.store, "alice", logins=["alice"])
        await hub.build(WIDGET, 1, "failure", author=AUTHOR, url="https://ci.example.com/1")
        model, view, client, opened = await self._attach(hub, user="alice", token=token)
        client.start()
        # the state comes from status(), the pending alert from the login
        await wait_until(lambda: model.worst == Overall.FAILING and model.alerts, what="the failing build")
        self.assertEqual(model.colour, Colour.RED)
        self.assertEqual([n.kind for n in model.take_notifications()], ["alert"])
        claim = await client.call("claim", WIDGET, "ci", "main", "looking")
        self.assertEqual(claim["developer"], "alice")
        await wait_until(
            lambda: view.project_actions()[0].text().endswith("alice is on it"), what="the claim"
        )
        await hub.build(WIDGET, 2, "running", author=AUTHOR)
        await hub.build(WIDGET, 2, "success", author=AUTHOR, url="https://ci.example.com/2")
        await wait_until(lambda: model.worst == Overall.PASSING, what="the fix")
        self.assertEqual(
            [a.text() for a in view.project_actions()], ["acme/widget ci@main: passing (#2 by alice)"]
        )
        view.project_actions()[0].trigger()
        self.assertEqual(opened, ["https://ci.example.com/2"])
        await wait_until(lambda: len(model.alerts) == 2, what="the fixed alert")
        message = view.show_notifications()
        self.assertIsNotNone(message)
        self.assertTrue(message.title.startswith("Your commit"), message)
        self.assertIn("fixed acme/widget ci@main", message.title)
        self.assertEqual((await client.stop()).ending, Ending.STOPPED)
        self.assertEqual(model.worst, Overall.STOPPED)

    async def test_signed_in_elsewhere(self) -> None:
        hub = self.hub = await RunningHub.start(self)
        token = await add_developer(hub.hub.store, "alice")
        model, view, client, _ = await self._attach(hub, user="alice", token=token)
        done = client.start()
        outcomes: list[Any] = []
        done.addCallback(outcomes.append)  # as the app does, through the bridge
        done.addCallback(lambda _: model.on_outcome(outcomes[0]))
        await wait_until(lambda: model.connected, what="the tray to connect")
        other = await Client.connect(self, hub.hub.pb_address)
        await other.login("alice", token, RecordingMind())
        await done
        self.assertEqual(outcomes[0].ending, Ending.SIGNED_IN_ELSEWHERE)
        self.assertEqual(model.worst, Overall.SIGNED_IN_ELSEWHERE)
        self.assertEqual(model.colour, Colour.GREY)
        self.assertIn("signed in elsewhere", view.tray.toolTip())
        self.assertIn("signed in elsewhere", view.menu.actions()[0].text())

    async def _attach(
        self, hub: RunningHub, **options: Any
    ) -> tuple[TrayModel, TrayView, WatchClient, list[str]]:
        model = TrayModel(user=options.get("user"), hub=hub.hub.pb_address)
        opened: list[str] = []
        view = TrayView(model, open_url=lambda url: opened.append(url.toString()))
        self.addCleanup(view.close)
        bridge = Bridge(model)
        relay = Relay(bridge.send)
        options.setdefault("projects", [WIDGET])
        client = WatchClient(relay, hub=hub.hub.pb_address, retry_policy=fast_retries(), **options)
        relay.client = client
        self.addCleanup(client.stop)
        return model, view, client, opened
