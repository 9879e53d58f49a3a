"""The Qt side: the tray icon (the worst build's colour and shape, marked
when not live, crossed out once stopped), its tooltip, its menu
(:mod:`.menu`) and balloons. All of the state is in the model; this only
draws it and passes the user's choices on.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, QUrl
from PySide6.QtGui import QCursor, QDesktopServices
from PySide6.QtWidgets import QSystemTrayIcon

from buildnotify_tray.icons import Icons
from buildnotify_tray.menu import Commands, TrayMenu, ask_note
from buildnotify_tray.model import ENDED_LINKS, Link, TrayModel
from buildnotify_tray.notifications import Message, summarize


class TrayView(QObject):
    """Draws ``model`` into a QSystemTrayIcon and its menu. ``open_url``
    opens a build's page (default: the desktop's browser); ``on_quit`` is the
    Quit entry. Notifications are shown ``notify_delay_ms`` after the first
    of a batch arrives, so an event and its alert become one balloon."""

    def __init__(
        self,
        model: TrayModel,
        commands: Commands,
        open_url: Callable[[str], object] | None = None,
        ask_note: Callable[[str], str | None] = ask_note,
        on_quit: Callable[[], object] | None = None,
        notify_delay_ms: int = 300,
    ) -> None:
        super().__init__()
        self.model = model
        self.open_url = open_url or (lambda url: QDesktopServices.openUrl(QUrl(url)))
        self.icons = Icons()
        self.tray = QSystemTrayIcon()
        self.menu = TrayMenu(model, commands, self.icons, self.open_url, ask_note, on_quit)
        self.tray.setContextMenu(self.menu.menu)
        self.tray.activated.connect(self._activated)
        self.tray.messageClicked.connect(self._message_clicked)
        self.messages: collections.deque[Message] = collections.deque(maxlen=50)  # shown, newest last
        self._message_url: str | None = None
        # no Qt parent: the timer dies with this Python object, never after it
        self._flush = QTimer()
        self._flush.setSingleShot(True)
        self._flush.setInterval(notify_delay_ms)
        self._flush.timeout.connect(self.show_notifications)
        model.subscribe(self.refresh)
        self.refresh()

    def show(self) -> None:
        self.tray.show()

    def close(self) -> None:
        """Hide the icon and stop drawing the model."""
        self._flush.stop()
        self.model.unsubscribe(self.refresh)
        self.tray.hide()
        self.tray.setContextMenu(None)

    # -- drawing ------------------------------------------------------------------------

    def refresh(self) -> None:
        model = self.model
        link, worst = model.link, model.worst
        stale = link != Link.LIVE and worst is not None
        self.tray.setIcon(self.icons.get(worst, stale=stale, stopped=link in ENDED_LINKS))
        self.tray.setToolTip(model.tooltip)
        self.menu.rebuild()
        if model.pending and not self._flush.isActive():
            self._flush.start()

    # -- notifications ------------------------------------------------------------------

    def show_notifications(self) -> Message | None:
        message = summarize(self.model.take_notifications())
        if message is None:
            return None
        self.messages.append(message)
        self._message_url = message.url
        kind = (
            QSystemTrayIcon.MessageIcon.Critical
            if message.urgent
            else QSystemTrayIcon.MessageIcon.Information
        )
        self.tray.showMessage(message.title, message.body, kind, 10_000 if message.urgent else 5_000)
        return message

    # -- clicks -------------------------------------------------------------------------

    def _message_clicked(self) -> None:
        if self._message_url:
            self.open_url(self._message_url)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a left click: the menu too
            self.menu.menu.popup(QCursor.pos())


__all__ = ["TrayView"]
