"""The chat window on small laptop screens at 100, 150 and 200 %: nothing cut off, room to read."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRect
from PySide6.QtWidgets import QAbstractButton, QWidget

from muse_desktop.settings import Settings
from muse_desktop.ui.app import MainWindow

SCREENS = [(1280, 720), (1366, 768)]
ZOOMS = [100, 150, 200]


def _problems(root: QWidget) -> list[str]:
    """Shown widgets sticking out of their shown parent, and buttons too narrow for their words."""
    found = []
    for widget in root.findChildren(QWidget):
        parent = widget.parentWidget()
        if not widget.isVisible() or parent is None or not parent.isVisible() or widget.isWindow():
            continue
        if parent.inherits("QScrollArea") or parent.objectName() == "qt_scrollarea_viewport":
            continue  # scrolled content may be larger than its window: that is what scrolling is for
        if parent.inherits("QAbstractScrollArea") or parent.inherits("QComboBox") or parent.inherits("QLineEdit"):
            continue  # Qt's own parts (scroll bars, the clear button) are placed by Qt
        if not QRect(0, 0, parent.width(), parent.height()).contains(widget.geometry()):
            found.append(f"{type(widget).__name__} {getattr(widget, 'text', lambda: '')()!r} outside its parent")
        if isinstance(widget, QAbstractButton) and widget.text():
            needed = widget.fontMetrics().horizontalAdvance(widget.text().replace("&", ""))
            if needed > widget.width():
                found.append(f"button {widget.text()!r} cut: {needed} px of words in {widget.width()} px")
    return found


@pytest.mark.parametrize("size", SCREENS)
@pytest.mark.parametrize("zoom", ZOOMS)
def test_the_chat_fits_the_screen_whole_and_keeps_room_for_the_conversation(qtbot, isolated_home, size, zoom):
    win = MainWindow(Settings(user_type_id="adult", zoom_percent=zoom))
    qtbot.addWidget(win)
    win.show()
    win.chat.set_user_type(win.page.current(), open_saved_model=False)
    win.pages.setCurrentWidget(win.chat)
    width, height = size
    win.resize(width, height - 48)  # a task bar takes about 48 px
    qtbot.wait(50)
    assert win.width() <= width and win.height() <= height - 48, (win.width(), win.height())
    problems = _problems(win.chat)
    assert not problems, problems
    if zoom >= 200:
        share = win.chat.scroll.height() / win.height()
        assert share >= 0.5, f"the conversation has {share:.0%} of the height"


@pytest.mark.parametrize("size", SCREENS)
def test_the_first_window_fits_the_screen_at_normal_size(qtbot, isolated_home, size):
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    qtbot.wait(20)
    assert win.width() <= size[0] and win.height() <= size[1] - 48
    assert win.minimumSizeHint().height() <= size[1] - 48
    problems = _problems(win._picker)
    assert not problems, problems
    start = win.page.start
    assert start.isVisible() and start.mapTo(win, start.rect().bottomLeft()).y() <= win.height()
