"""The tray's icons, drawn with QPainter. Each state has its own colour *and*
shape, so that no one has to tell red from green:

- new failure: red disc with "!"; still failing: red disc with a cross;
- infrastructure error: purple triangle with "!";
- building: amber disc with a "play" triangle; passing: green disc with a tick;
- no result yet: grey disc with a dash; nothing known: a grey ring;
- not live (stale): the state's icon with a grey dot in the corner;
- stopped (signed in elsewhere, refused): grey disc with a bar through it.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

from buildnotify_tray.builds import BuildState
from buildnotify_tray.model import STATE_COLOURS, Colour

WHITE = QColor("#ffffff")
BAR = QColor("#424242")
SIZES = (16, 22, 24, 32, 48, 64)


def icon_pixmap(
    state: BuildState | None, size: int = 64, *, stale: bool = False, stopped: bool = False
) -> QPixmap:
    """The icon of ``state`` (None: nothing known yet) at ``size`` pixels."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    if stopped:
        _disc(painter, s, QColor(Colour.GREY))
        _stroke(painter, s, BAR, [(0.25, 0.75), (0.75, 0.25)])
    elif state is None:
        rim = max(1.5, s / 10)
        painter.setPen(QPen(QColor(Colour.GREY), rim))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawEllipse(QRectF(rim, rim, s - 2 * rim, s - 2 * rim))
    else:
        _GLYPHS[state](painter, s, QColor(STATE_COLOURS[state]))
    if stale and not stopped:
        badge = s * 0.42
        painter.setPen(QPen(WHITE, max(1.0, s / 24)))
        painter.setBrush(QColor(Colour.GREY).darker(130))
        painter.drawEllipse(QRectF(s - badge, s - badge, badge - 0.5, badge - 0.5))
    painter.end()
    return pixmap


def make_icon(state: BuildState | None, *, stale: bool = False, stopped: bool = False) -> QIcon:
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(icon_pixmap(state, size, stale=stale, stopped=stopped))
    return icon


class Icons:
    """Each icon drawn once."""

    def __init__(self) -> None:
        self._made: dict[tuple[BuildState | None, bool, bool], QIcon] = {}

    def get(self, state: BuildState | None, *, stale: bool = False, stopped: bool = False) -> QIcon:
        key = (state, stale, stopped)
        if key not in self._made:
            self._made[key] = make_icon(state, stale=stale, stopped=stopped)
        return self._made[key]


# -- shapes ---------------------------------------------------------------------------


def _disc(painter: QPainter, s: float, fill: QColor) -> None:
    rim = max(1.0, s / 16)
    painter.setPen(QPen(fill.darker(150), rim))
    painter.setBrush(fill)
    painter.drawEllipse(QRectF(rim, rim, s - 2 * rim, s - 2 * rim))


def _stroke(painter: QPainter, s: float, colour: QColor, points: list[tuple[float, float]]) -> None:
    """A thick round-capped polyline through ``points`` (fractions of the size)."""
    painter.setPen(
        QPen(colour, s / 8, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    )
    painter.setBrush(Qt.BrushStyle.NoBrush)
    path = QPainterPath(QPointF(points[0][0] * s, points[0][1] * s))
    for x, y in points[1:]:
        path.lineTo(x * s, y * s)
    painter.drawPath(path)


def _exclamation(
    painter: QPainter, s: float, top: float = 0.24, bottom: float = 0.56, dot: float = 0.74
) -> None:
    _stroke(painter, s, WHITE, [(0.5, top), (0.5, bottom)])
    _stroke(painter, s, WHITE, [(0.5, dot), (0.5, dot + 0.005)])


def _new_failure(painter: QPainter, s: float, fill: QColor) -> None:
    _disc(painter, s, fill)
    _exclamation(painter, s)


def _still_failing(painter: QPainter, s: float, fill: QColor) -> None:
    _disc(painter, s, fill)
    _stroke(painter, s, WHITE, [(0.32, 0.32), (0.68, 0.68)])
    _stroke(painter, s, WHITE, [(0.68, 0.32), (0.32, 0.68)])


def _error(painter: QPainter, s: float, fill: QColor) -> None:
    rim = max(1.0, s / 16)
    painter.setPen(
        QPen(fill.darker(150), rim, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    )
    painter.setBrush(fill)
    painter.drawPolygon(QPolygonF([QPointF(s / 2, rim), QPointF(s - rim, s - rim), QPointF(rim, s - rim)]))
    _exclamation(painter, s, top=0.4, bottom=0.64, dot=0.8)


def _building(painter: QPainter, s: float, fill: QColor) -> None:
    _disc(painter, s, fill)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(WHITE)
    painter.drawPolygon(
        QPolygonF([QPointF(0.38 * s, 0.28 * s), QPointF(0.74 * s, 0.5 * s), QPointF(0.38 * s, 0.72 * s)])
    )


def _passing(painter: QPainter, s: float, fill: QColor) -> None:
    _disc(painter, s, fill)
    _stroke(painter, s, WHITE, [(0.28, 0.52), (0.44, 0.68), (0.72, 0.34)])


def _unknown(painter: QPainter, s: float, fill: QColor) -> None:
    _disc(painter, s, fill)
    _stroke(painter, s, WHITE, [(0.32, 0.5), (0.68, 0.5)])


_GLYPHS = {
    BuildState.NEW_FAILURE: _new_failure,
    BuildState.STILL_FAILING: _still_failing,
    BuildState.ERROR: _error,
    BuildState.BUILDING: _building,
    BuildState.PASSING: _passing,
    BuildState.UNKNOWN: _unknown,
}
