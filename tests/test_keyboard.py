"""Keyboard only: real key events go to whatever has focus, and every press is counted."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from muse_desktop.household.settings import Settings
from muse_desktop.ui.app import MainWindow


class Keyboard:
    """Presses keys on the focused widget, as a keyboard does, and counts them (typing is not counted)."""

    def __init__(self, qtbot):
        self.qtbot, self.presses = qtbot, 0

    def focused(self):
        return QApplication.focusWidget()

    def press(self, key, modifier=Qt.NoModifier) -> None:
        target = self.focused()
        assert target is not None, "nothing has the keyboard focus"
        QTest.keyClick(target, key, modifier)
        self.presses += 1
        self.qtbot.wait(20)

    def type(self, words: str) -> None:
        QTest.keyClicks(self.focused(), words)


@pytest.fixture
def returning(qtbot, isolated_home, tiny_gguf):
    """Someone who used MUsE before: their user type and model are saved."""
    from muse_desktop.models.demo_model import Variant
    from muse_desktop.household.settings import save_settings

    settings = Settings(user_type_id="older-adult", model_path=str(tiny_gguf[Variant.MINI_4K]))
    save_settings(settings)
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    qtbot.waitActive(win)
    return win


def test_a_returning_person_reaches_a_first_answer_in_at_most_8_key_presses(returning, qtbot):
    win, keys = returning, Keyboard(qtbot)
    assert keys.focused() is win.page.start
    keys.press(Qt.Key_Return)  # Start talking
    assert keys.focused() is win.chat.input
    qtbot.waitUntil(lambda: win.chat.engine is not None and win.chat.worker is None, timeout=30000)
    keys.type("Why do leaves turn brown?")
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        keys.press(Qt.Key_Return)
    qtbot.waitUntil(lambda: win.chat.worker is None)
    answers = [b for b in win.chat._bubbles() if b.role == "assistant" and b.text().strip()]
    assert answers and keys.presses <= 8, keys.presses
    assert keys.focused() is win.chat.input  # ready for the next question
    print(f"key presses from launch to a first answer: {keys.presses}")


def test_enter_presses_the_focused_button_and_try_again_keeps_focus_on_try_again(returning, qtbot):
    win, keys = returning, Keyboard(qtbot)
    keys.press(Qt.Key_Return)
    qtbot.waitUntil(lambda: win.chat.engine is not None and win.chat.worker is None, timeout=30000)
    keys.type("Hello")
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        keys.press(Qt.Key_Return)
    qtbot.waitUntil(lambda: win.chat.worker is None)
    win.chat.regenerate_button.setFocus(Qt.TabFocusReason)
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        keys.press(Qt.Key_Return)  # Enter, not Space: it must press "Try again"
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert keys.focused() is win.chat.regenerate_button, keys.focused()


def test_the_four_tiles_are_one_group_reached_by_tab_and_moved_through_with_arrows(qtbot, isolated_home):
    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    qtbot.waitActive(win)
    keys, tiles = Keyboard(qtbot), win.page.tiles
    win.page.search.setFocus(Qt.TabFocusReason)
    qtbot.waitUntil(win.page.search.hasFocus)
    keys.press(Qt.Key_Tab, Qt.ShiftModifier)  # back into the group: at the chosen tile
    assert keys.focused() is tiles["adult"]
    keys.press(Qt.Key_Right)
    assert keys.focused() is tiles["older-adult"]
    keys.press(Qt.Key_Right)
    assert keys.focused() is tiles["child"]  # round again
    keys.press(Qt.Key_Down)
    assert keys.focused() is tiles["teenager"]
    keys.press(Qt.Key_Return)  # Enter chooses
    assert win.settings.user_type_id == "teenager"
    keys.press(Qt.Key_Tab)  # one Tab leaves the group: the other tiles are not in the way
    assert keys.focused() is win.page.search
    keys.press(Qt.Key_Tab, Qt.ShiftModifier)
    assert keys.focused() is tiles["teenager"]
