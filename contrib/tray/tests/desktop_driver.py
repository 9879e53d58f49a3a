"""Drives the real tray in a real window, as a user would: run by
test_tray_desktop.py on an X display (Xvfb) that has a system-tray host
(trayer), with QT_QPA_PLATFORM=xcb.

One process, built like the app: Qt's loop in the main thread, the reactor
in a second one (``ReactorThread``), which here also runs a hub on loopback
(SQLite in a temporary directory). Each step waits for what the user would
see; the script exits 1 naming what did not appear, 0 when every step
passed. It saves a screenshot of the tray with its menu open (and one while
the hub is unreachable) next to the path given.

    python contrib/tray/tests/desktop_driver.py --screenshot /tmp/tray.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent, HERE.parents[2]):  # traysupport; buildnotify_tray; tests.*
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import treq  # noqa: E402
from PySide6.QtCore import QEventLoop, QPoint, QRect, Qt, QTimer  # noqa: E402
from PySide6.QtGui import QColor, QGuiApplication, QImage  # noqa: E402
from PySide6.QtWidgets import QApplication, QInputDialog, QSystemTrayIcon, QWidget  # noqa: E402
from twisted.internet import reactor, threads  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.web.client import HTTPConnectionPool  # noqa: E402

from buildnotify.config import HubConfig  # noqa: E402
from buildnotify.server import Hub  # noqa: E402
from buildnotify_tray.app import TrayApp  # noqa: E402
from buildnotify_tray.bridge import ReactorThread  # noqa: E402
from buildnotify_tray.builds import BuildState  # noqa: E402
from buildnotify_tray.menu import RETRY_NOW, SIGN_IN_AGAIN  # noqa: E402
from buildnotify_tray.model import Colour, Link  # noqa: E402
from tests.pbclient import Client, RecordingMind, add_developer  # noqa: E402
from tests.test_client import fast_retries  # noqa: E402
from traysupport import pb_outage  # noqa: E402

STEP_TIMEOUT = 20.0  # seconds for anything the user waits for
ALICE = {"name": "Alice Liddell", "email": "alice@example.com", "login": "alice"}
BOB = {"name": "Bob", "email": "bob@example.com", "login": "bob"}
WIDGET = "acme/widget"


class Missing(Exception):
    """Something the user should have seen did not appear."""


class Desktop:
    """Qt's side: wait for what the user sees, find windows, take pictures."""

    def __init__(self, app: QApplication) -> None:
        self.app = app
        self.heartbeat = QTimer()  # wakes the wait loop up, so that deadlines are noticed
        self.heartbeat.start(50)

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := predicate()):
            if time.monotonic() > deadline:
                raise Missing(f"timed out after {timeout:g} s waiting for {what}")
            self.app.processEvents(QEventLoop.ProcessEventsFlag.WaitForMoreEvents)
        return found

    def painted(self, widget: QWidget, what: str) -> None:
        """Wait until ``widget`` is on the screen and drawn."""
        self.wait_for(lambda: widget.isVisible() and widget.windowHandle().isExposed(), what)
        self.app.processEvents()
        QGuiApplication.sync()

    def screenshot(self, path: Path, *regions: QRect) -> None:
        """The screen around ``regions`` (the tray, its menu, a balloon)."""
        screen = QGuiApplication.primaryScreen()
        area = QRect()
        for region in regions:
            area = area.united(region)
        area = area.adjusted(-24, -8, 24, 24).intersected(screen.geometry())
        image = screen.grabWindow(0).copy(area)
        if image.isNull() or not image.save(str(path)):
            raise Missing(f"a screenshot saved at {path}")
        print(f"screenshot: {path} ({image.width()}x{image.height()})", flush=True)

    def balloon(self) -> QWidget | None:
        """Qt's own balloon (drawn where no notification service runs), if shown."""
        widgets = self.app.topLevelWidgets()
        return next(
            (w for w in widgets if w.isVisible() and w.metaObject().className() == "QBalloonTip"), None
        )

    def answer_dialog(self, text: str) -> None:
        """Fill in and accept the next input dialog (the claim's note)."""

        def answer() -> None:
            dialog = QApplication.activeModalWidget()
            if not isinstance(dialog, QInputDialog):
                QTimer.singleShot(20, answer)
                return
            dialog.setTextValue(text)
            dialog.accept()

        QTimer.singleShot(0, answer)


class HubSide:
    """The reactor thread's part: a hub, its webhooks, other people's sessions."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.cleanups: list[Callable[[], Any]] = []
        self.hub: Any = None
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def run(self, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the coroutine function ``work`` in the reactor thread; its result."""
        return threads.blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(work(*args, **kwargs)))

    def addCleanup(self, f: Callable[[], Any]) -> None:  # noqa: N802 (what tests.pbclient.Client expects)
        self.cleanups.append(f)

    async def start(self) -> None:
        config = HubConfig(
            http="tcp:0:interface=127.0.0.1",
            pb="tcp:0:interface=127.0.0.1",
            database=str(self.directory / "hub.db"),
        )
        self.hub = await Hub.start(config, reactor)

    async def stop(self) -> None:
        for cleanup in reversed(self.cleanups):
            cleanup()
        await self.hub.stop()
        await self.pool.closeCachedConnections()

    async def build(self, project: str, number: int, status: str, **fields: Any) -> None:
        body = {
            "project": project,
            "pipeline": "ci",
            "number": number,
            "status": status,
            "branch": "main",
            "sha": f"{number:04x}c0ffee9a3b",
            "url": f"https://ci.example.com/{project}/{number}",
        }
        response = await treq.post(f"{self.hub.http_url}/hooks/generic", json=body | fields, pool=self.pool)
        if response.code != 200:
            raise Missing(f"the hub to store a build, not {response.code} {await response.text()}")
        await response.content()

    async def developer(self, name: str) -> str:
        return await add_developer(self.hub.store, name, logins=[name])

    async def session(self, name: str, token: str, mind: Any = None) -> Any:
        client = await Client.connect(self, self.hub.pb_address)
        return await client.login(name, token, mind)

    async def claim(self, name: str, token: str, project: str, branch: str, note: str) -> None:
        session = await self.session(name, token)
        await session.callRemote("claim", project, "ci", branch, note)

    async def alerts(self, name: str, token: str) -> list[Any]:
        return await (await self.session(name, token)).callRemote("alerts")


def ago(**delta: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(**delta)).isoformat()


def icon_colour(app: TrayApp) -> QColor:
    image: QImage = app.view.tray.icon().pixmap(64, 64).toImage()
    return image.pixelColor(8, 32)


def scenario(desktop: Desktop, hub: HubSide, thread: ReactorThread, screenshot: Path) -> None:
    step = lambda text: print(f"step: {text}", flush=True)  # noqa: E731
    step("a hub with builds in every state")
    hub.run(hub.start)
    alice = hub.run(hub.developer, "alice")
    bob = hub.run(hub.developer, "bob")
    hub.run(hub.build, WIDGET, 811, "success", author=ALICE, finished_at=ago(hours=5))
    hub.run(hub.build, WIDGET, 812, "failure", author=ALICE, finished_at=ago(minutes=4))
    hub.run(hub.build, WIDGET, 40, "failure", author=BOB, branch="release", finished_at=ago(hours=2))
    hub.run(hub.build, WIDGET, 41, "failure", author=BOB, branch="release", finished_at=ago(minutes=35))
    hub.run(hub.build, WIDGET, 42, "running", author=BOB, branch="release", started_at=ago(minutes=30))
    hub.run(hub.build, WIDGET, 42, "cancelled", author=BOB, branch="release", finished_at=ago(minutes=29))
    hub.run(hub.claim, "bob", bob, WIDGET, "release", "flaky test, on it")
    hub.run(hub.build, "acme/gadget", 7, "error", author=BOB, finished_at=ago(hours=1))
    hub.run(hub.build, "acme/gizmo", 3, "success", author=BOB, finished_at=ago(hours=3))
    hub.run(hub.build, "acme/gizmo", 4, "running", author=ALICE, started_at=ago(minutes=2))
    hub.run(hub.build, "acme/docs", 9, "success", author=BOB, finished_at=ago(days=2))

    step("alice's tray, first run: it watches every project she can see")
    opened: list[str] = []
    found = {"hub": hub.hub.pb_address, "user": "alice", "token": alice, "projects": None}
    app = TrayApp(found, reactor, open_url=opened.append, retry_policy=fast_retries(), thread=thread)
    app.start()
    model, view, menu = app.model, app.view, app.view.menu
    desktop.wait_for(
        lambda: (
            model.link == Link.LIVE and model.visible and len(model.entries()) == 5 and model.alert_entries()
        ),
        "the tray live with 5 branches and alice's alert",
    )
    desktop.wait_for(lambda: not view.tray.geometry().isEmpty(), "the icon embedded in the tray host")
    states = [e.state for e in model.entries()]
    if states != [
        BuildState.NEW_FAILURE,
        BuildState.STILL_FAILING,  # the cancelled run #42 does not count
        BuildState.ERROR,
        BuildState.BUILDING,
        BuildState.PASSING,
    ]:
        raise Missing(f"the five states, worst first, not {states}")
    if icon_colour(app) != QColor(Colour.RED):
        raise Missing(f"a red icon, not {icon_colour(app).name()}")
    desktop.wait_for(lambda: view.messages, "the balloon of alice's alert")

    step("the balloon, and the menu open below it")
    geometry = view.tray.geometry()
    balloon = desktop.wait_for(desktop.balloon, "the balloon on the screen")
    desktop.painted(balloon, "the balloon drawn")
    menu.menu.popup(QPoint(geometry.left(), balloon.geometry().bottom() + 6))
    desktop.painted(menu.menu, "the menu on the screen")
    desktop.screenshot(screenshot, geometry, balloon.geometry(), menu.menu.geometry())
    menu.menu.hide()

    step("claim with a note, then release")
    entry = menu.find("acme/widget ci@main").menu()
    desktop.answer_dialog("looking into it")
    next(a for a in entry.actions() if a.text().startswith("Claim")).trigger()
    desktop.wait_for(
        lambda: model.entries()[0].text.endswith('you are on it: "looking into it"'),
        "alice's claim in the menu",
    )
    menu.find("acme/widget ci@main").menu().actions()[-1].trigger()  # Release my claim
    desktop.wait_for(lambda: "on it" not in model.entries()[0].text, "the claim released")

    step("acknowledge the alert")
    menu.find("Your commit").menu().actions()[-1].trigger()  # Acknowledge
    desktop.wait_for(lambda: not model.alert_entries(), "the alert gone from the menu")
    if hub.run(hub.alerts, "alice", alice):
        raise Missing("the hub to have the alert acknowledged")

    step("the hub unreachable: red stays red, marked stale")
    restore = hub.run(pb_outage, hub.hub)
    desktop.wait_for(lambda: model.link == Link.STALE, "the tray to notice the outage")
    header = menu.menu.actions()[0].text()
    if not header.startswith("Not live: builds as of ") or icon_colour(app) != QColor(Colour.RED):
        raise Missing(
            f"a red icon and 'Not live: builds as of ...', not {icon_colour(app).name()}, {header!r}"
        )
    menu.menu.popup(geometry.bottomLeft())
    desktop.painted(menu.menu, "the stale menu on the screen")
    desktop.screenshot(screenshot.with_name(f"{screenshot.stem}-stale.png"), geometry, menu.menu.geometry())
    menu.menu.hide()
    hub.run(restore)
    menu.find(RETRY_NOW).trigger()
    desktop.wait_for(lambda: model.link == Link.LIVE, "the tray live again")

    step("signed in elsewhere: greyed, then sign in again")
    mind = RecordingMind()
    other = hub.run(hub.session, "alice", alice, mind)  # noqa: F841 (kept: dropping it logs out)
    desktop.wait_for(lambda: model.link == Link.SIGNED_OUT, "the goodbye")
    if any(a.isEnabled() for a in menu.build_actions()) or icon_colour(app) != QColor(Colour.GREY):
        raise Missing("a greyed list and a grey icon after the goodbye")
    menu.find(SIGN_IN_AGAIN).trigger()
    desktop.wait_for(lambda: model.link == Link.LIVE, "the tray signed in again")
    desktop.wait_for(lambda: mind.goodbyes == ["signed in elsewhere"], "the other client's goodbye")

    step("quit")
    hub.run(hub.stop)
    QTimer.singleShot(0, menu.find("Quit").trigger)
    desktop.app.exec()
    if thread.thread.is_alive():
        raise Missing("the reactor thread to stop after Quit")


def backdrop() -> QWidget:
    """A plain desktop behind the tray (an empty X screen is black)."""
    widget = QWidget(None, Qt.WindowType.FramelessWindowHint)
    widget.setStyleSheet("background: #d9dee4")
    widget.setGeometry(QGuiApplication.primaryScreen().geometry())
    widget.show()
    widget.lower()
    return widget


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--screenshot", type=Path, required=True)
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    app.setQuitOnLastWindowClosed(False)
    desktop = Desktop(app)
    thread = ReactorThread(reactor)
    try:
        desktop.wait_for(QSystemTrayIcon.isSystemTrayAvailable, "a system tray host on this display")
        behind = backdrop()  # noqa: F841 (kept on the screen)
        thread.start()
        with tempfile.TemporaryDirectory() as directory:
            scenario(desktop, HubSide(Path(directory)), thread, args.screenshot)
    except Missing as e:
        print(f"MISSING: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        thread.stop()
    print("every step passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
