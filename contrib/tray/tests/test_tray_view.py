"""The Qt view, offscreen: icon rendering, the menu, notifications, and
the bridge between the reactor's thread and Qt's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication

from buildnotify.client import Phase, State
from buildnotify_tray.bridge import Bridge, Relay
from buildnotify_tray.model import Colour, TrayModel
from buildnotify_tray.view import TrayView, icon_pixmap
from test_tray_model import HUB, claim, event, live_model


@pytest.fixture
def view_of() -> Iterator[Callable[[TrayModel], tuple[TrayView, list[str], list[bool]]]]:
    views: list[TrayView] = []

    def make(model: TrayModel) -> tuple[TrayView, list[str], list[bool]]:
        opened: list[str] = []
        quits: list[bool] = []
        view = TrayView(
            model, open_url=lambda url: opened.append(url.toString()), on_quit=lambda: quits.append(True)
        )
        views.append(view)
        return view, opened, quits

    yield make
    for view in views:
        view.close()


def test_the_icon_is_a_disc_of_the_colour() -> None:
    for colour in Colour:
        image = icon_pixmap(colour, 32).toImage()
        assert image.pixelColor(16, 16) == QColor(colour), colour
        assert image.pixelColor(0, 0).alpha() == 0  # the corners are transparent
    crossed = icon_pixmap(Colour.GREY, 64, crossed=True).toImage()
    assert crossed.pixelColor(32, 32) != QColor(Colour.GREY)  # the bar through the middle
    assert crossed.pixelColor(20, 32) == QColor(Colour.GREY)


def test_the_tray_follows_the_model(view_of: Any) -> None:
    model = live_model()
    view, opened, quits = view_of(model)
    assert [a.text() for a in view.project_actions()] == ["no builds yet"]
    model.on_event(event("success", 1, "passed", project="acme/gadget"))
    assert view.tray.toolTip() == "buildnotify: 1 passing"
    assert view.tray.icon().pixmap(32, 32).toImage().pixelColor(16, 16) == QColor(Colour.GREEN)
    failed = event("failure", 2, "failed")
    model.on_event(failed)
    model.on_claim(claim("claimed"))
    assert view.tray.icon().pixmap(32, 32).toImage().pixelColor(16, 16) == QColor(Colour.RED)
    actions = view.project_actions()
    assert [a.text() for a in actions] == [
        "acme/widget ci@main: failing (#2 by alice); bob is on it",
        "acme/gadget ci@main: passing (#1 by alice)",
    ]
    assert view.menu.actions()[0].text() == "live"  # the connection, first
    actions[0].trigger()
    assert opened == [failed["url"]]
    view.menu.actions()[-1].trigger()
    assert quits == [True]
    model.on_state(State(Phase.DISCONNECTED, "disconnected; retrying in 2 s", HUB))
    assert view.tray.icon().pixmap(32, 32).toImage().pixelColor(16, 16) == QColor(Colour.GREY)
    assert view.menu.actions()[0].text() == "disconnected; retrying in 2 s"


def test_an_entry_without_a_url_is_disabled(view_of: Any) -> None:
    model = live_model()
    view, _, _ = view_of(model)
    model.on_event(event("failure", 1, "failed", url=None))
    assert not view.project_actions()[0].isEnabled()


def test_notifications_are_batched_into_one_balloon(view_of: Any) -> None:
    model = live_model(user="alice")
    view, opened, _ = view_of(model)
    failed = event("failure", 3, "failed")
    model.on_event(failed)
    assert view._flush.isActive()  # shown a moment later, so that the alert can join
    model.on_alert({"alert_id": 1, "developer": "alice", "event": failed})
    message = view.show_notifications()
    assert message is not None and message.title.startswith("Your commit")
    assert list(view.messages) == [message]
    view._message_clicked()
    assert opened == [failed["url"]]
    assert view.show_notifications() is None


def test_the_bridge_delivers_in_the_gui_thread() -> None:
    seen: list[tuple[str, Any, bool]] = []

    class Model:
        def on_event(self, payload: Any) -> None:
            seen.append(("on_event", payload, threading.current_thread() is threading.main_thread()))

    bridge = Bridge(Model())
    relay = Relay(bridge.send)
    worker = threading.Thread(target=relay.on_event, args=({"id": 1},))
    worker.start()
    worker.join()
    assert seen == []  # queued for the GUI thread ...
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        QApplication.processEvents()
    assert seen == [("on_event", {"id": 1}, True)]  # ... and delivered there
