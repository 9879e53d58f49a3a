"""The Qt view, offscreen: icons told apart by shape, the menu and what its
entries ask for, notifications, and the bridge between the reactor's thread
and Qt's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QApplication

from buildnotify.client import Ending, Outcome, Phase, State
from buildnotify_tray.bridge import Bridge, InReactor
from buildnotify_tray.builds import BuildState
from buildnotify_tray.icons import icon_pixmap
from buildnotify_tray.menu import PROJECTS, RETRY_NOW, SIGN_IN_AGAIN
from buildnotify_tray.model import Colour, Projects, TrayModel
from buildnotify_tray.view import TrayView
from test_tray_model import HUB, WIDGET, claim, event, live_model


class Commands:
    """Records what the menu asks for."""

    def __init__(self) -> None:
        self.asked: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.asked.append((name, *args))


class Shown:
    """A view of a model, with what it asked and opened."""

    def __init__(self, model: TrayModel, note: str | None) -> None:
        self.commands = Commands()
        self.opened: list[str] = []
        self.quits: list[bool] = []
        self.notes_asked: list[str] = []

        def ask(where: str) -> str | None:
            self.notes_asked.append(where)
            return note

        self.view = TrayView(
            model,
            self.commands,
            open_url=self.opened.append,
            ask_note=ask,
            on_quit=lambda: self.quits.append(True),
        )
        self.menu = self.view.menu

    def texts(self) -> list[str]:
        return [a.text() for a in self.menu.build_actions()]


@pytest.fixture
def show() -> Iterator[Callable[..., Shown]]:
    shown: list[Shown] = []

    def make(model: TrayModel, note: str | None = "looking") -> Shown:
        shown.append(Shown(model, note))
        return shown[-1]

    yield make
    for s in shown:
        s.view.close()


def grey(image: QImage) -> list[int]:
    return [
        QColor(image.pixel(x, y)).lightness() for y in range(image.height()) for x in range(image.width())
    ]


def at(image: QImage, x: float, y: float) -> QColor:
    return image.pixelColor(int(x * image.width()), int(y * image.height()))


# -- icons ----------------------------------------------------------------------------------


def test_states_are_told_apart_by_shape_not_colour_alone() -> None:
    shapes = {state: grey(icon_pixmap(state, 32).toImage()) for state in [*BuildState, None]}
    for a in shapes:
        for b in shapes:
            if a != b:
                assert shapes[a] != shapes[b], f"{a} and {b} differ only by colour"
    for state in BuildState:
        image = icon_pixmap(state, 64).toImage()
        assert at(image, 0.5, 0.9).name() != "#ffffff"  # filled, not blank
        assert at(image, 0.02, 0.02).alpha() == 0, f"{state}: the corners are transparent"


def test_a_stale_icon_keeps_its_colour_and_gets_a_grey_mark() -> None:
    plain = icon_pixmap(BuildState.STILL_FAILING, 64).toImage()
    stale = icon_pixmap(BuildState.STILL_FAILING, 64, stale=True).toImage()
    assert at(stale, 0.12, 0.5) == at(plain, 0.12, 0.5) == QColor(Colour.RED), "red stays red"
    assert at(stale, 0.86, 0.86) != at(plain, 0.86, 0.86)
    assert at(stale, 0.86, 0.86).saturation() < 30, "the corner mark is grey"
    stopped = icon_pixmap(BuildState.STILL_FAILING, 64, stopped=True).toImage()
    assert at(stopped, 0.12, 0.5) == QColor(Colour.GREY)


# -- the menu ---------------------------------------------------------------------------------


def test_the_menu_follows_the_model(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model)
    assert shown.menu.find("no builds yet")
    model.on_event(event("success", 1, "passed", project="acme/gadget"))
    mine = event("failure", 2, "failed")
    model.on_event(mine)
    model.on_alert({"alert_id": 4, "developer": "ada", "event": mine})
    model.on_claim(claim("claimed"))
    assert shown.view.tray.toolTip().startswith("buildnotify: 1 new failure, 1 passing")
    assert shown.view.tray.icon().pixmap(32, 32).toImage().pixelColor(4, 16) == QColor(Colour.RED)
    assert shown.texts() == [
        'acme/widget ci@main: new failure, #2 by you, 59m ago; bob is on it: "flaky test"',
        "acme/gadget ci@main: passing, #1 by alice, 1h ago",
    ]
    widget, gadget = shown.menu.build_actions()
    assert widget.font().bold() and not gadget.font().bold(), "your breakage stands out"
    assert widget.menu() is not None, "a failing build opens its actions"
    gadget.trigger()
    assert shown.opened == ["https://ci.example.com/acme/gadget/1"]
    shown.menu.find("Open the build").trigger()
    assert shown.opened[-1] == mine["url"]
    assert shown.menu.menu.actions()[0].text() == f"Live on {HUB} as ada"
    shown.menu.find("Quit").trigger()
    assert shown.quits == [True]


def test_claim_with_a_note_and_release_your_own(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model, note="looking")
    model.on_event(event("failure", 1, "failed"))
    shown.menu.find("Claim: I'm on it").trigger()
    assert shown.notes_asked == ["acme/widget ci@main"]
    assert shown.commands.asked == [("claim", WIDGET, "looking")]
    model.on_claim(claim("claimed", developer="ada", note="looking"))
    assert shown.texts()[0].endswith('; you are on it: "looking"')
    with pytest.raises(LookupError):
        shown.menu.find("Claim")
    shown.menu.find("Release my claim").trigger()
    assert shown.commands.asked[-1] == ("release", WIDGET)


def test_a_cancelled_note_claims_nothing_and_anonymous_sessions_cannot_claim(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model, note=None)
    model.on_event(event("failure", 1, "failed"))
    shown.menu.find("Claim").trigger()
    assert shown.commands.asked == []
    anonymous = show(live_model())
    anonymous.view.model.on_event(event("failure", 1, "failed"))
    [line] = anonymous.menu.build_actions()
    assert line.menu() is None, "nothing to do but open it"


def test_alerts_are_listed_to_acknowledge(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model)
    broke, fixed = event("failure", 1, "failed"), event("success", 2, "fixed")
    model.on_alerts([{"alert_id": 5, "event": broke}, {"alert_id": 6, "event": fixed}])
    assert shown.menu.find("Your alerts (2)")
    first = shown.menu.find("Your commit 00000001 broke acme/widget ci@main")
    assert first.font().bold(), "a breakage is urgent"
    first.menu().actions()[1].trigger()  # Acknowledge
    shown.menu.find("Acknowledge all 2 alerts").trigger()
    assert shown.commands.asked == [("ack", [5]), ("ack", [5, 6])]


def test_projects_are_picked_and_what_is_not_visible_named(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model)
    model.on_hidden(["acme/secret"])
    model.on_projects(Projects(("acme/widget",), ("acme/gadget", "acme/widget")))
    assert shown.menu.find("Not visible: acme/secret (no such project, or private)")
    picker = shown.menu.find(PROJECTS).menu()
    assert [(a.text(), a.isChecked(), a.isEnabled()) for a in picker.actions()] == [
        ("acme/gadget", False, True),
        ("acme/widget", True, True),
        ("acme/secret — not visible (no such project, or private)", False, False),
    ]
    picker.actions()[0].trigger()
    picker.actions()[1].trigger()
    assert shown.commands.asked == [("watch", "acme/gadget"), ("unwatch", "acme/widget")]


def test_while_the_hub_is_unreachable_the_list_stays_but_actions_wait(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model)
    model.on_event(event("failure", 1, "failed"))
    model.on_state(State(Phase.DISCONNECTED, "disconnected (connection refused); retrying in 1.0 s", HUB))
    assert shown.menu.menu.actions()[0].text().startswith("Not live: builds as of ")
    [line] = shown.menu.build_actions()
    assert line.isEnabled()
    assert not shown.menu.find("Claim").isEnabled()
    shown.menu.find(RETRY_NOW).trigger()
    assert shown.commands.asked == [("reconnect",)]
    icon = shown.view.tray.icon().pixmap(64, 64).toImage()
    assert at(icon, 0.12, 0.5) == QColor(Colour.RED) and at(icon, 0.86, 0.86).saturation() < 30


def test_after_a_goodbye_the_list_is_greyed_and_sign_in_again_offered(show: Any) -> None:
    model = live_model(user="ada")
    shown = show(model)
    model.on_event(event("failure", 1, "failed"))
    model.on_goodbye("signed in elsewhere")
    model.on_outcome(Outcome(Ending.SIGNED_IN_ELSEWHERE, "ada signed in elsewhere"))
    assert all(not a.isEnabled() for a in shown.menu.build_actions())
    assert at(shown.view.tray.icon().pixmap(64, 64).toImage(), 0.12, 0.5) == QColor(Colour.GREY)
    shown.menu.find(SIGN_IN_AGAIN).trigger()
    assert shown.commands.asked == [("sign_in_again",)]


# -- notifications and threads ------------------------------------------------------------------


def test_notifications_are_batched_into_one_balloon(show: Any) -> None:
    model = live_model(user="alice")
    shown = show(model)
    failed = event("failure", 3, "failed")
    model.on_event(failed)
    assert shown.view._flush.isActive()  # shown a moment later, so that the alert can join
    model.on_alert({"alert_id": 1, "developer": "alice", "event": failed})
    message = shown.view.show_notifications()
    assert message is not None and message.title.startswith("Your commit")
    assert list(shown.view.messages) == [message]
    shown.view._message_clicked()
    assert shown.opened == [failed["url"]]
    assert shown.view.show_notifications() is None


def test_the_bridge_delivers_in_the_gui_thread_and_commands_go_to_the_reactor() -> None:
    seen: list[tuple[str, Any, bool]] = []

    class Model:
        def on_event(self, payload: Any) -> None:
            seen.append(("on_event", payload, threading.current_thread() is threading.main_thread()))

    bridge = Bridge(Model())
    worker = threading.Thread(target=bridge.send, args=("on_event", {"id": 1}))
    worker.start()
    worker.join()
    assert seen == []  # queued for the GUI thread ...
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        QApplication.processEvents()
    assert seen == [("on_event", {"id": 1}, True)]  # ... and delivered there

    calls: list[tuple[Any, ...]] = []
    target = Commands()
    InReactor(target, lambda f, *args: calls.append((f, args))).claim(WIDGET, "note")
    assert target.asked == [] and len(calls) == 1, "nothing runs in the GUI thread"
    f, args = calls[0]
    f(*args)
    assert target.asked == [("claim", WIDGET, "note")]
