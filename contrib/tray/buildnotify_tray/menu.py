"""The tray's menu, drawn from the model and rebuilt on every change (and
each time it opens, so that the ages are current):

- the connection (live, or "not live: builds as of 14:03" with *Reconnect
  now*), what is not shown (projects not visible, watched projects without
  builds), and *Sign in again* after a goodbye or a refusal;
- your pending alerts, each to open or acknowledge, and *Acknowledge all*;
- one line per build, worst first, with its state in words, its own icon
  shape, its age and its claim; your own breakage in bold; a failing build
  opens a submenu to open it, claim it (with a note) or release your claim;
- *Projects*: tick the projects to watch;
- *Quit*.

Greyed out (disabled) once the tray stopped: the list is what it was then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Protocol

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QInputDialog, QMenu

from buildnotify_tray.builds import FAILING_STATES, Key, label
from buildnotify_tray.icons import Icons
from buildnotify_tray.model import ENDED_LINKS, NOT_VISIBLE_NOTE, Entry, Link, TrayModel

SIGN_IN_AGAIN = "Sign in again"
RETRY_NOW = "Reconnect now"
PROJECTS = "Projects"
QUIT = "Quit"


class Commands(Protocol):
    """What the menu asks of the hub (carried out in the reactor thread)."""

    def claim(self, key: Key, note: str | None) -> None: ...
    def release(self, key: Key) -> None: ...
    def ack(self, alert_ids: list[int]) -> None: ...
    def watch(self, project: str) -> None: ...
    def unwatch(self, project: str) -> None: ...
    def sign_in_again(self) -> None: ...
    def reconnect(self) -> None: ...


def ask_note(where: str) -> str | None:
    """The note of a claim, from a dialog; None if the user cancelled."""
    text, ok = QInputDialog.getText(
        None, "Claim a build", f"You are on {where}.\nA note for the others (optional):"
    )
    return text.strip() if ok else None


def bold(action: QAction, on: bool) -> None:
    font = action.font()
    font.setBold(on)
    action.setFont(font)


class TrayMenu:
    """A QMenu that shows ``model`` and sends the user's choices to ``commands``."""

    def __init__(
        self,
        model: TrayModel,
        commands: Commands,
        icons: Icons,
        open_url: Callable[[str], object],
        ask_note: Callable[[str], str | None] = ask_note,
        on_quit: Callable[[], object] | None = None,
    ) -> None:
        self.model = model
        self.commands = commands
        self.icons = icons
        self.open_url = open_url
        self.ask_note = ask_note
        self.on_quit = on_quit
        self.menu = QMenu()
        self.menu.aboutToShow.connect(self.rebuild)

    def rebuild(self) -> None:
        self._clear()
        self._header()
        self._alerts()
        self._builds()
        self._projects()
        self.menu.addSeparator()
        quit_action = self.menu.addAction(QUIT)
        if self.on_quit is not None:
            quit_action.triggered.connect(self.on_quit)

    def _clear(self) -> None:
        """Empty the menu. Its entries are deleted later, not now: the change
        may come from one of them, still inside its ``triggered`` signal."""
        for action in self.menu.actions():
            self.menu.removeAction(action)
            (action.menu() or action).deleteLater()

    # -- finding entries (tests, scripts) ------------------------------------------------------

    def actions(self, menu: QMenu | None = None) -> Iterator[QAction]:
        """Every action, submenus' included, depth first."""
        for action in (menu or self.menu).actions():
            yield action
            if action.menu() is not None:
                yield from self.actions(action.menu())

    def find(self, text: str) -> QAction:
        """The first action whose text starts with ``text``."""
        for action in self.actions():
            if action.text().startswith(text):
                return action
        shown = "\n  ".join(a.text() for a in self.actions() if a.text())
        raise LookupError(f"no menu entry starting with {text!r}; the menu has:\n  {shown}")

    def build_actions(self) -> list[QAction]:
        """The build lines, in order."""
        keys = {label(e.key) for e in self.model.entries()}
        return [a for a in self.menu.actions() if a.text().split(":", 1)[0] in keys]

    # -- sections ----------------------------------------------------------------------------

    def _header(self) -> None:
        link = self.model.link
        for n, line in enumerate(self.model.header()):
            action = self.menu.addAction(line)
            action.setEnabled(False)
            bold(action, n == 0 and link != Link.LIVE)  # what is wrong, readable though greyed
        if link in ENDED_LINKS:
            self.menu.addAction(SIGN_IN_AGAIN).triggered.connect(self._sign_in_again)
        elif link == Link.STALE:
            self.menu.addAction(RETRY_NOW).triggered.connect(self._reconnect)
        self.menu.addSeparator()

    def _alerts(self) -> None:
        alerts = self.model.alert_entries()
        if not alerts:
            return
        can_act = self.model.can_act()
        self.menu.addSection(f"Your alerts ({len(alerts)})")
        for alert in alerts:
            sub = self.menu.addMenu(self.icons.get(alert.state), alert.text)
            bold(sub.menuAction(), alert.urgent)
            self._open_action(sub, alert.url, "Open the build")
            ack = sub.addAction("Acknowledge")
            ack.setEnabled(can_act)
            ack.triggered.connect(functools.partial(self._ack, [alert.alert_id]))
        if len(alerts) > 1:
            ack_all = self.menu.addAction(f"Acknowledge all {len(alerts)} alerts")
            ack_all.setEnabled(can_act)
            ack_all.triggered.connect(functools.partial(self._ack, [a.alert_id for a in alerts]))
        self.menu.addSeparator()

    def _builds(self) -> None:
        entries = self.model.entries()
        if not entries:
            empty = "no builds yet" if self.model.watching else "watching nothing: choose under Projects"
            self.menu.addAction(empty).setEnabled(False)
        ended = self.model.link in ENDED_LINKS
        for entry in entries:
            icon = self.icons.get(entry.state)
            if self.model.user is not None and entry.state in FAILING_STATES:
                sub = self.menu.addMenu(icon, entry.text)
                self._build_actions(sub, entry)
                action = sub.menuAction()
            else:
                action = self.menu.addAction(icon, entry.text)
                if entry.url:
                    action.setToolTip(entry.url)
                    action.triggered.connect(functools.partial(self._open, entry.url))
                else:
                    action.setEnabled(False)
            bold(action, entry.mine)  # your own breakage stands out
            if ended:
                action.setEnabled(False)
        self.menu.addSeparator()

    def _build_actions(self, sub: QMenu, entry: Entry) -> None:
        self._open_action(sub, entry.url, "Open the build")
        can_act = self.model.can_act()
        if entry.claimed_by is not None and entry.claimed_by == self.model.user:
            release = sub.addAction("Release my claim")
            release.setEnabled(can_act)
            release.triggered.connect(functools.partial(self._release, entry.key))
        else:
            claim = sub.addAction("Claim: I'm on it…")
            claim.setEnabled(can_act)
            claim.triggered.connect(functools.partial(self._claim, entry.key))

    def _projects(self) -> None:
        sub = self.menu.addMenu(PROJECTS)
        choices = self.model.project_choices()
        link = self.model.link
        can_choose = link == Link.LIVE or (link == Link.STOPPED and not self.model.watching)
        for choice in choices:
            text = choice.project + (f" — {choice.note}" if choice.note else "")
            action = sub.addAction(text)
            action.setCheckable(True)
            action.setChecked(choice.watched)
            action.setEnabled(can_choose)
            action.toggled.connect(functools.partial(self._choose, choice.project))
        for project in self.model.hidden:
            sub.addAction(f"{project} — {NOT_VISIBLE_NOTE}").setEnabled(False)
        if not choices and not self.model.hidden:
            sub.addAction("no projects known yet").setEnabled(False)

    def _open_action(self, menu: QMenu, url: str | None, text: str) -> None:
        action = menu.addAction(text)
        if url:
            action.setToolTip(url)
            action.triggered.connect(functools.partial(self._open, url))
        else:
            action.setEnabled(False)

    # -- the user's choices ------------------------------------------------------------------

    def _open(self, url: str, *_: object) -> None:
        self.open_url(url)

    def _claim(self, key: Key, *_: object) -> None:
        note = self.ask_note(label(key))
        if note is not None:
            self.commands.claim(key, note or None)

    def _release(self, key: Key, *_: object) -> None:
        self.commands.release(key)

    def _ack(self, alert_ids: list[int], *_: object) -> None:
        self.commands.ack(alert_ids)

    def _choose(self, project: str, watched: bool) -> None:
        if watched:
            self.commands.watch(project)
        else:
            self.commands.unwatch(project)

    def _sign_in_again(self, *_: object) -> None:
        self.commands.sign_in_again()

    def _reconnect(self, *_: object) -> None:
        self.commands.reconnect()
