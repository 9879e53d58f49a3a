"""Twisted and Qt in one program.

Qt's event loop owns the main thread (the tray icon, the menu, the
notifications must live there); the Twisted reactor and the
:class:`~buildnotify.client.WatchClient` run in a second thread
(:class:`ReactorThread`). They meet in two places only:

- the client's callbacks run in the reactor thread;
  :class:`~buildnotify_tray.client.TrayClient` forwards each one through
  :class:`Bridge`, a Qt signal, which Qt queues to the GUI thread, where the
  :class:`~buildnotify_tray.model.TrayModel` is updated;
- the GUI asks the reactor to do something (start, stop, claim, ack...)
  through :class:`InReactor`, that is ``reactor.callFromThread``, Twisted's
  one thread-safe entry point.

Why not one loop? There is no maintained Qt reactor for PySide6 (qt5reactor
is PyQt5/PySide2 only), driving ``reactor.iterate()`` from a QTimer polls
(latency or wasted wakeups), and QtAsyncio (under which Twisted's asyncio
reactor could run) is a technical preview that PySide6-Essentials does not
ship. Two threads and a signal need
nothing beyond the two libraries' documented thread-safe calls.

When the reactor and Qt share a thread (the tests), the signal is delivered
directly: the same code runs without a second thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

log = logging.getLogger("buildnotify.tray")


class Bridge(QObject):
    """Delivers ``model.<method>(payload)`` in the thread the bridge lives
    in (the GUI thread), whatever thread ``send`` is called from."""

    delivered = Signal(str, object)

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.delivered.connect(self._deliver)

    def send(self, method: str, payload: Any) -> None:
        self.delivered.emit(method, payload)

    def _deliver(self, method: str, payload: Any) -> None:
        try:
            getattr(self.model, method)(payload)
        except Exception:
            log.exception("the tray's %s failed", method)


class InReactor:
    """The GUI's handle on an object of the reactor thread (the
    :class:`~buildnotify_tray.client.TrayClient`): each method call is run
    there by ``call(f, *args)``, e.g. ``reactor.callFromThread``; it returns
    nothing (results come back to the model through the bridge)."""

    def __init__(self, target: Any, call: Callable[..., Any]) -> None:
        self._target = target
        self._call = call

    def __getattr__(self, name: str) -> Callable[..., None]:
        method = getattr(self._target, name)

        def in_reactor(*args: Any) -> None:
            self._call(method, *args)

        return in_reactor


class ReactorThread:
    """The Twisted reactor, running in a daemon thread."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.thread = threading.Thread(target=self._run, name="twisted-reactor", daemon=True)

    def _run(self) -> None:
        # signal handlers can only be installed in the main thread, which is Qt's
        self.reactor.run(installSignalHandlers=False)

    def start(self) -> None:
        self.thread.start()

    def call(self, f: Callable[..., Any], *args: Any) -> None:
        """Run ``f(*args)`` in the reactor thread."""
        self.reactor.callFromThread(f, *args)

    def stop(self, timeout: float = 3.0) -> None:
        if self.thread.is_alive():
            self.reactor.callFromThread(self._stop)
            self.thread.join(timeout)

    def _stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()
