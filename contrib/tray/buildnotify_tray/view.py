"""The Qt side: a tray icon coloured by the worst build, a menu of the
builds (click one to open its page), and balloons for failures, fixes,
your alerts and claims. All of the state is in the model; this only draws it.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QColor, QCursor, QDesktopServices, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from buildnotify_tray.model import Colour, Message, Overall, TrayModel, summarize

STOPPED_STATES = (Overall.SIGNED_IN_ELSEWHERE, Overall.STOPPED)


def icon_pixmap(colour: str, size: int = 64, crossed: bool = False) -> QPixmap:
    """A filled circle of ``colour`` with a dark rim; ``crossed`` adds a
    diagonal bar (the client stopped for good)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    fill = QColor(colour)
    rim = max(1.0, size / 16)
    painter.setPen(QPen(fill.darker(150), rim))
    painter.setBrush(fill)
    inset = rim
    painter.drawEllipse(QRectF(inset, inset, size - 2 * inset, size - 2 * inset))
    if crossed:
        painter.setPen(QPen(QColor("#424242"), size / 8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
        painter.drawLine(QPointF(size * 0.25, size * 0.75), QPointF(size * 0.75, size * 0.25))
    painter.end()
    return pixmap


def make_icon(colour: str, crossed: bool = False) -> QIcon:
    icon = QIcon()
    for size in (16, 22, 24, 32, 48, 64):
        icon.addPixmap(icon_pixmap(colour, size, crossed))
    return icon


class TrayView(QObject):
    """Draws ``model`` into a QSystemTrayIcon and its menu. ``open_url``
    opens a build's page (default: the desktop's browser); ``on_quit`` is the
    Quit entry. Notifications are shown ``notify_delay_ms`` after the first
    of a batch arrives, so an event and its alert become one balloon."""

    def __init__(
        self,
        model: TrayModel,
        open_url: Callable[[QUrl], object] | None = None,
        on_quit: Callable[[], None] | None = None,
        notify_delay_ms: int = 300,
    ) -> None:
        super().__init__()
        self.model = model
        self.open_url = open_url or QDesktopServices.openUrl
        self.on_quit = on_quit
        self.tray = QSystemTrayIcon()
        self.menu = QMenu()
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._activated)
        self.tray.messageClicked.connect(self._message_clicked)
        self.messages: collections.deque[Message] = collections.deque(maxlen=50)  # shown, newest last
        self._message_url: str | None = None
        self._icons: dict[tuple[str, bool], QIcon] = {}
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

    def icon(self, colour: str, crossed: bool = False) -> QIcon:
        key = (colour, crossed)
        if key not in self._icons:
            self._icons[key] = make_icon(colour, crossed)
        return self._icons[key]

    # -- drawing ------------------------------------------------------------------------

    def refresh(self) -> None:
        model = self.model
        self.tray.setIcon(self.icon(model.colour, model.worst in STOPPED_STATES))
        self.tray.setToolTip(model.tooltip)
        self.rebuild_menu()
        if model.pending and not self._flush.isActive():
            self._flush.start()

    def rebuild_menu(self) -> None:
        menu = self.menu
        menu.clear()
        status = menu.addAction(self.model.connection)
        status.setEnabled(False)
        menu.addSeparator()
        entries = self.model.entries()
        if not entries:
            empty = menu.addAction("no builds yet")
            empty.setEnabled(False)
        for entry in entries:
            action = menu.addAction(self.icon(entry.colour), entry.text)
            if entry.url:
                action.setToolTip(entry.url)
                action.triggered.connect(functools.partial(self._open, entry.url))
            else:
                action.setEnabled(False)
        menu.addSeparator()
        quit_action = menu.addAction("Quit")
        if self.on_quit is not None:
            quit_action.triggered.connect(self.on_quit)

    def project_actions(self) -> list[QAction]:
        """The menu's build entries (for tests and scripts)."""
        actions = [a for a in self.menu.actions() if not a.isSeparator()]
        return actions[1:-1] if actions and actions[-1].text() == "Quit" else actions[1:]

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

    def _open(self, url: str, *_: object) -> None:
        self.open_url(QUrl(url))

    def _message_clicked(self) -> None:
        if self._message_url:
            self._open(self._message_url)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:  # a left click: the menu too
            self.menu.popup(QCursor.pos())


__all__ = ["Colour", "TrayView", "icon_pixmap", "make_icon"]
