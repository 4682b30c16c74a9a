"""The side panels (Chats, Settings on the left; Gauges and the API server on the right), their
first sizes, and what they do when the window is narrow.

Wide (at least :data:`NARROW_BELOW` px): the panels are docks beside the chat, sized in
proportion to the screen. Narrow: they fold away so the chat keeps the window, and each one
opens as a drawer (View menu, toolbar): one at a time, at most ``width - CHAT_MIN`` wide, so the
chat column never drops below :data:`CHAT_MIN` px. Widening the window brings back the panels
that were open. The layout saved at quit is the wide one, so a squeezed window does not squeeze
the next launch.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QRect, Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QMainWindow, QScrollArea, QWidget

DEFAULT_SIZE = (1280, 800)
FRAME_ALLOWANCE = (16, 40)  # a window manager's borders and title bar, in pixels
NARROW_BELOW = 1000  # px: below this window width the side panels become drawers
CHAT_MIN = 480  # px: the chat column keeps at least this much


def first_geometry(avail: QRect) -> QRect:
    """The window's first size and place: 1280x800, or less where the screen is smaller,
    centred, with room left for a window manager's frame. It never starts larger than the
    screen (at 1024x640 the message box used to be below the bottom edge)."""
    w = min(DEFAULT_SIZE[0], avail.width() - FRAME_ALLOWANCE[0])
    h = min(DEFAULT_SIZE[1], avail.height() - FRAME_ALLOWANCE[1])
    return QRect(
        avail.x() + (avail.width() - w) // 2,
        avail.y() + max(0, (avail.height() - h - FRAME_ALLOWANCE[1]) // 2),
        w,
        h,
    )


def side_widths(width: int) -> tuple[int, int]:
    """(left, right) dock widths for a window ``width`` px wide: in proportion, and never so
    wide that the chat gets less than CHAT_MIN."""
    left = max(240, min(320, int(width * 0.24)))
    right = max(220, min(270, int(width * 0.2)))
    spare = width - CHAT_MIN
    if left + right > spare:
        scale = max(0.0, spare / max(1, left + right))
        left, right = int(left * scale), int(right * scale)
    return left, right


class SidePanels:
    """Builds the docks into ``w`` and keeps them fitting its width."""

    def __init__(
        self, w: QMainWindow, chats: QWidget, settings: QWidget, gauges: QWidget, server: QWidget
    ) -> None:
        self.w = w
        L, R = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
        self.chats = self._dock("Chats", chats, L, scroll=False)
        self.settings = self._dock("Settings", settings, L)
        self.gauges = self._dock("Gauges", gauges, R, min_width=220)
        self.server = self._dock("API server", server, R, min_width=220, scroll=False)
        w.splitDockWidget(self.chats, self.settings, Qt.Orientation.Vertical)
        w.tabifyDockWidget(self.gauges, self.server)  # never a column of its own
        self.gauges.raise_()
        self.server.hide()
        self.narrow = False
        self._open_when_wide: list[QDockWidget] = []
        self.wide_state: QByteArray | None = None  # the layout to save while narrow
        for d in self.all():
            d.visibilityChanged.connect(lambda on, d=d: self._opened(d, on))

    def all(self) -> list[QDockWidget]:
        return [self.chats, self.settings, self.gauges, self.server]

    def by_name(self) -> dict[str, QDockWidget]:
        return {
            "chats": self.chats,
            "settings": self.settings,
            "gauges": self.gauges,
            "server": self.server,
        }

    def _dock(
        self,
        title: str,
        widget: QWidget,
        area: Qt.DockWidgetArea,
        min_width: int = 240,
        scroll: bool = True,
    ) -> QDockWidget:
        inner: QWidget = widget
        if scroll:
            area_w = QScrollArea()
            area_w.setWidgetResizable(True)
            area_w.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            area_w.setWidget(widget)
            area_w.setFrameShape(QScrollArea.Shape.NoFrame)
            inner = area_w
        inner.setMinimumWidth(min_width)
        dock = QDockWidget(title, self.w)
        dock.setObjectName(f"dock:{title}")
        dock.setWidget(inner)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.w.addDockWidget(area, dock)
        return dock

    def size_to(self, width: int, height: int) -> None:
        left, right = side_widths(width)
        self.w.resizeDocks([self.chats, self.gauges], [left, right], Qt.Orientation.Horizontal)
        chats = max(150, int(height * 0.28))  # room for 2-3 chats above the settings
        self.w.resizeDocks(
            [self.chats, self.settings], [chats, max(200, height - chats)], Qt.Orientation.Vertical
        )

    def fit(self, width: int) -> None:
        """Called on every resize of the window."""
        if width < NARROW_BELOW and not self.narrow:
            self.wide_state = self.w.saveState()
            # not isVisible(): before the window is shown nothing is visible, yet these are
            # the panels it opens with
            self._open_when_wide = [d for d in self.all() if not d.isHidden()]
            self.narrow = True
            for d in self.all():
                d.hide()
        elif width >= NARROW_BELOW and self.narrow:
            self.narrow = False
            for d in self._open_when_wide:
                d.show()
            if self.server in self._open_when_wide and self.gauges in self._open_when_wide:
                self.gauges.raise_()
            self._open_when_wide = []
            self.size_to(width, self.w.height())
        elif not self.narrow:
            # wide, but the panels kept the widths of a wider window: give the chat its room
            # (once the layout has followed the new size)
            QTimer.singleShot(0, self._keep_chat_room)

    def _keep_chat_room(self) -> None:
        if not self.narrow and 0 < self.chat_width() < CHAT_MIN:
            self.size_to(self.w.width(), self.w.height())

    def _opened(self, dock: QDockWidget, on: bool) -> None:
        """Narrow: a panel opened is a drawer, the only one open, never too wide."""
        if not (on and self.narrow):
            return
        for d in self.all():
            if d is not dock and d.isVisible() and not self.w.tabifiedDockWidgets(dock).count(d):
                d.hide()
        width = max(200, min(320, self.w.width() - CHAT_MIN))
        self.w.resizeDocks([dock], [width], Qt.Orientation.Horizontal)

    def state_to_save(self) -> QByteArray:
        """The wide layout (a narrow window saves the one it had before it narrowed)."""
        if self.narrow and self.wide_state is not None:
            return self.wide_state
        return self.w.saveState()

    def chat_width(self) -> int:
        central = self.w.centralWidget()
        return central.width() if central is not None else 0
