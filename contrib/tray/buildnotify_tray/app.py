"""``buildnotify-tray``: the desktop tray front end.

    buildnotify-tray [--hub ENDPOINT] [--user NAME | --anonymous] [--token-file F]
                     [--project P ...] [--client-config FILE]

The options and the client config work as for ``buildnotify-cli watch``
(docs/watch.md). See README.md.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from buildnotify.client.settings import ClientConfigError, add_connection_options, resolve_connection

EXIT_OK = 0
EXIT_NO_TRAY = 1
EXIT_USAGE = 2
PROG = "buildnotify-tray"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="A tray icon showing the worst state of your builds on a buildnotify hub: red failing, "
        "amber building, green passing, grey disconnected. Its menu lists the builds (click to open one); "
        "failures, fixes, your own alerts and claims pop up as notifications.",
    )
    add_connection_options(p)
    p.add_argument(
        "--project",
        metavar="P",
        action="append",
        default=[],
        help="watch this project (repeatable; a developer's default: the projects watched before)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the connection on stderr")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_USAGE


def settings(args: argparse.Namespace) -> dict[str, Any] | str:
    """hub, user, token, projects from the arguments and the client config;
    a string is the error to report."""
    try:
        connection = resolve_connection(args, no_token_hint=" (or use --anonymous)")
    except ClientConfigError as e:
        return str(e)
    if connection.warning:
        print(f"{PROG}: warning: {connection.warning}", file=sys.stderr)
    projects = list(args.project) or list(connection.config.projects) or None
    if connection.user is None and not projects:
        return "name the projects to watch with --project P (or projects in the client config)"
    return {"hub": connection.hub, "user": connection.user, "token": connection.token, "projects": projects}


class TrayApp:
    """The running tray: the model and the view in Qt's thread, the
    :class:`~buildnotify_tray.client.TrayClient` in the reactor's."""

    def __init__(
        self,
        found: dict[str, Any],
        reactor: Any,
        open_url: Callable[[str], object] | None = None,
        ask_note: Callable[[str], str | None] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        thread: Any = None,
    ) -> None:
        """``thread``: a :class:`~buildnotify_tray.bridge.ReactorThread`
        already running ``reactor`` (default: one started by :meth:`start`)."""
        from buildnotify_tray.bridge import Bridge, InReactor, ReactorThread
        from buildnotify_tray.client import TrayClient
        from buildnotify_tray.menu import ask_note as ask_with_a_dialog
        from buildnotify_tray.model import TrayModel
        from buildnotify_tray.view import TrayView

        self.reactor = reactor
        self.model = TrayModel(user=found["user"], hub=found["hub"], clock=reactor)
        self.bridge = Bridge(self.model)
        self.client = TrayClient(self.bridge.send, reactor=reactor, retry_policy=retry_policy, **found)
        self.thread = thread or ReactorThread(reactor)
        self.view = TrayView(
            self.model,
            InReactor(self.client, self.thread.call),
            open_url=open_url,
            ask_note=ask_note or ask_with_a_dialog,
            on_quit=self.quit,
        )
        self._quitting = False

    def start(self) -> None:
        """Show the icon and start the reactor thread and the client."""
        self.view.show()
        if not self.thread.thread.is_alive():
            self.thread.start()
        self.thread.call(self.client.start)

    def quit(self, *_: Any) -> None:
        """Close the connection, then leave Qt's loop (at once on a second request)."""
        from PySide6.QtCore import QTimer
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        if self._quitting:
            app.quit()
            return
        self._quitting = True

        def stop() -> None:
            self.client.stop().addBoth(lambda _: self.reactor.stop())

        def poll() -> None:
            if self.thread.thread.is_alive():
                QTimer.singleShot(50, poll)
            else:
                app.quit()

        self.thread.call(stop)
        QTimer.singleShot(3000, app.quit)  # in case closing hangs
        QTimer.singleShot(50, poll)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    found = settings(args)
    if isinstance(found, str):
        return _fail(found)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="buildnotify-tray: %(message)s"
    )

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon
    from twisted.internet import reactor

    app = QApplication(sys.argv[:1])
    app.setApplicationName(PROG)
    app.setQuitOnLastWindowClosed(False)
    if not QSystemTrayIcon.isSystemTrayAvailable():
        print(f"{PROG}: this desktop has no system tray", file=sys.stderr)
        return EXIT_NO_TRAY

    tray = TrayApp(found, reactor)
    # Qt's loop does not run Python's signal handlers by itself: wake it up now and then.
    signal.signal(signal.SIGINT, tray.quit)
    signal.signal(signal.SIGTERM, tray.quit)
    wakeup = QTimer()
    wakeup.timeout.connect(lambda: None)
    wakeup.start(250)
    tray.start()
    code = app.exec()
    tray.thread.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
