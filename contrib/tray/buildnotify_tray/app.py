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
from pathlib import Path
from typing import Any

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
    p.add_argument("--hub", metavar="ENDPOINT", help="the hub's PB endpoint (default tcp:127.0.0.1:8787)")
    p.add_argument("--user", metavar="NAME", help="log in as this developer (needs a token)")
    p.add_argument(
        "--anonymous", action="store_true", help="log in anonymously even if the client config names a user"
    )
    p.add_argument(
        "--token-file", metavar="F", type=Path, help="file holding the token (else $BUILDNOTIFY_TOKEN)"
    )
    p.add_argument(
        "--project",
        metavar="P",
        action="append",
        default=[],
        help="watch this project (repeatable; a developer's default: the projects watched before)",
    )
    p.add_argument(
        "--client-config",
        metavar="FILE",
        type=Path,
        help="client config (default ~/.config/buildnotify/client.toml)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the connection on stderr")
    return p


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return EXIT_USAGE


def settings(args: argparse.Namespace) -> dict[str, Any] | str:
    """hub, user, token, projects from the arguments and the client config;
    a string is the error to report."""
    from buildnotify.client import ClientConfigError, load_config, resolve_token

    try:
        config = load_config(args.client_config)
    except ClientConfigError as e:
        return str(e)
    hub = args.hub or config.hub
    user = None if args.anonymous else (args.user or config.user)
    token = None
    if user is not None:
        try:
            token, warning = resolve_token(None, args.token_file, config)
        except ClientConfigError as e:
            return str(e)
        if token is None:
            return (
                f"no token for {user}: give --token-file, set BUILDNOTIFY_TOKEN, or set token_file "
                "in the client config (or use --anonymous)"
            )
        if warning:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
    elif args.token_file is not None:
        return "--token-file needs --user (or a user in the client config)"
    projects = list(args.project) or list(config.projects) or None
    if user is None and not projects:
        return "name the projects to watch with --project P (or projects in the client config)"
    return {"hub": hub, "user": user, "token": token, "projects": projects}


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

    from buildnotify.client import WatchClient
    from buildnotify_tray.bridge import Bridge, ReactorThread, Relay
    from buildnotify_tray.model import TrayModel
    from buildnotify_tray.view import TrayView

    app = QApplication(sys.argv[:1])
    app.setApplicationName(PROG)
    app.setQuitOnLastWindowClosed(False)
    if not QSystemTrayIcon.isSystemTrayAvailable():
        print(f"{PROG}: this desktop has no system tray", file=sys.stderr)
        return EXIT_NO_TRAY

    model = TrayModel(user=found["user"], hub=found["hub"])
    bridge = Bridge(model)
    relay = Relay(bridge.send)
    try:
        # No resume file: the tray starts from the hub's status() of the
        # watched projects instead of replaying (and re-notifying) what happened
        # while it was not running; within a run, reconnects still resume.
        client = WatchClient(relay, reactor=reactor, resume=None, **found)
    except ValueError as e:
        return _fail(str(e))
    relay.client = client
    thread = ReactorThread(reactor)
    quitting: list[bool] = []

    def quit_app(*_: Any) -> None:
        if quitting:  # a second request: do not wait any longer
            app.quit()
            return
        quitting.append(True)

        def stop() -> None:
            client.stop().addBoth(lambda _: reactor.stop())

        thread.call(stop)
        QTimer.singleShot(3000, app.quit)  # in case closing hangs
        QTimer.singleShot(50, poll)

    def poll() -> None:
        if thread.thread.is_alive():
            QTimer.singleShot(50, poll)
        else:
            app.quit()

    def start() -> None:
        client.start().addCallback(lambda outcome: bridge.send("on_outcome", outcome))

    view = TrayView(model, on_quit=quit_app)
    view.show()
    # Qt's loop does not run Python's signal handlers by itself: wake it up now and then.
    signal.signal(signal.SIGINT, quit_app)
    signal.signal(signal.SIGTERM, quit_app)
    wakeup = QTimer()
    wakeup.timeout.connect(lambda: None)
    wakeup.start(250)

    thread.start()
    thread.call(start)
    code = app.exec()
    thread.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
