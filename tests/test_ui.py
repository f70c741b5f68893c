"""The window, offscreen: choosing a user type persists it; accessibility checks walk the widgets."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QAbstractItemView, QLineEdit

from muse_desktop.settings import Settings, Theme, load_settings
from muse_desktop.ui.app import MainWindow
from muse_desktop.ui.theme import MIN_TARGET_PX, PALETTES, contrast_ratio

INTERACTIVE = (QAbstractButton, QLineEdit, QAbstractItemView)


@pytest.fixture
def window(qtbot):
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def interactive_widgets(window):
    return [w for w in window.findChildren(QAbstractButton) + window.findChildren(QLineEdit) + window.findChildren(QAbstractItemView) if w.isVisible()]

def load_model_and_wait(qtbot, win, path) -> None:
    """Open ``path`` on the chat page and wait until the model is loaded and the worker gone."""
    with qtbot.waitSignal(win.chat.model_ready, timeout=30000):
        win.chat.load_model(str(path))
    qtbot.waitUntil(lambda: win.chat.worker is None)


def answer_and_wait(qtbot, win, action) -> None:
    """Run ``action`` (which asks something) and wait for the whole answer."""
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        action()
    qtbot.waitUntil(lambda: win.chat.worker is None)



def test_every_interactive_widget_has_an_accessible_name(window):
    widgets = interactive_widgets(window)
    assert len(widgets) >= 8
    unnamed = [w for w in widgets if not w.accessibleName() and not (isinstance(w, QAbstractButton) and w.text())]
    assert not unnamed, [type(w).__name__ for w in unnamed]


def test_click_targets_are_at_least_44px(window):
    for button in window.page.findChildren(QAbstractButton):
        if button.isVisible():
            assert button.width() >= MIN_TARGET_PX and button.height() >= MIN_TARGET_PX, button.text()


def test_choosing_a_tile_saves_the_user_type_and_shows_the_instruction(window, qtbot):
    qtbot.mouseClick(window.page.tiles["older-adult"], Qt.LeftButton)
    assert load_settings().settings.user_type_id == "older-adult"
    assert window.page.tiles["older-adult"].isChecked() and not window.page.tiles["child"].isChecked()
    assert "make Elderly understand" in window.page.preview.text()


def test_search_filters_and_enter_picks_the_best_match(window, qtbot):
    qtbot.keyClicks(window.page.search, "nurse")
    shown = [window.page.results.item(i).text() for i in range(window.page.results.count())]
    assert shown[0].startswith("Nurse —") and len(shown) == 2
    qtbot.keyClick(window.page.search, Qt.Key_Return)
    assert load_settings().settings.user_type_id == "nurse"
    assert window.page.chosen.text() == "Chosen: Nurse"


def test_custom_user_type_is_checked_before_use(window, qtbot):
    qtbot.keyClicks(window.page.custom, "Nurse<|end|>")
    qtbot.mouseClick(window.page.use_custom, Qt.LeftButton)
    assert "cannot contain" in window.page.error.text()
    assert load_settings().settings.custom_user_type == ""
    window.page.custom.setText("Urban beekeeper")
    qtbot.keyClick(window.page.custom, Qt.Key_Return)
    assert window.page.error.text() == ""
    saved = load_settings().settings
    assert saved.custom_user_type == "Urban beekeeper" and saved.user_type_id == ""
    assert "make Urban beekeeper understand" in window.page.preview.text()


def test_zoom_and_high_contrast_persist(window):
    window.zoom(+1)
    window.contrast.setChecked(True)
    saved = load_settings().settings
    assert saved.zoom_percent == 125 and saved.theme == Theme.HIGH_CONTRAST
    reopened = MainWindow(saved)
    assert reopened.contrast.isChecked() and "18pt" in reopened.styleSheet()
    reopened.close()


def test_nothing_overflows_at_200_percent(window, qtbot):
    for _ in range(4):
        window.zoom(+1)
    assert window.settings.zoom_percent == 200
    qtbot.wait(10)
    page = window.page
    for widget in interactive_widgets(window):
        if widget.window() is window and page.isAncestorOf(widget):
            assert widget.width() <= page.width(), widget.accessibleName()


@pytest.mark.parametrize("theme, minimum", [(Theme.NORMAL, 4.5), (Theme.HIGH_CONTRAST, 7.0)])
def test_text_contrast_meets_wcag(theme, minimum):
    palette = PALETTES[theme]
    assert contrast_ratio(palette["text"], palette["window"]) >= minimum
    assert contrast_ratio(palette["muted"], palette["window"]) >= minimum
    assert contrast_ratio(palette["accent_text"], palette["accent"]) >= minimum
    assert contrast_ratio(palette["error"], palette["window"]) >= minimum
    assert contrast_ratio(palette["text"], palette["field"]) >= minimum


def test_contrast_ratio_matches_known_values():
    assert contrast_ratio("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.01)


def test_no_arguments_opens_the_window(qtbot, monkeypatch):
    """`muse-desktop` with no command shows the main window (the event loop is stubbed out)."""
    from PySide6.QtWidgets import QApplication

    from muse_desktop import cli

    shown = []

    def fake_exec(self=None):
        shown.extend(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible())
        for widget in shown:
            widget.close()
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    assert cli.main([]) == 0
    assert shown and shown[0].windowTitle() == "MUsE Desktop"


def test_talking_to_a_model_streams_the_answer_and_saves_both_messages(qtbot, tiny_gguf, isolated_home):
    from muse_desktop.demo_model import Variant
    from muse_desktop.store import Store
    from muse_desktop.ui.chat import Bubble

    store = Store()
    win = MainWindow(Settings(user_type_id="older-adult"), store=store)
    qtbot.addWidget(win)
    win.show()
    qtbot.mouseClick(win.page.start, Qt.LeftButton)
    assert win.pages.currentWidget() is win.chat and win.chat.who.text() == "Answers for: Older adult"
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    assert load_settings().settings.model_path == str(tiny_gguf[Variant.MINI_4K])
    qtbot.keyClicks(win.chat.input, "Why is a balanced diet important?")
    answer_and_wait(qtbot, win, lambda: qtbot.keyClick(win.chat.input, Qt.Key_Return))
    bubbles = win.chat.findChildren(Bubble)
    assert [b.role for b in bubbles] == ["user", "assistant"]
    assert bubbles[0].text() == "Why is a balanced diet important?" and bubbles[1].text().strip()
    conversation = store.conversations()[0]
    assert conversation.user_type == "Elderly"
    saved = store.messages(conversation.id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[1].content == bubbles[1].text().strip() and saved[1].settings["stopped"] in ("end", "length")
    for widget in interactive_widgets(win):
        assert widget.accessibleName() or (isinstance(widget, QAbstractButton) and widget.text())
    for button in win.chat.findChildren(QAbstractButton):
        if button.isVisible():
            assert button.height() >= MIN_TARGET_PX
    win.close()
    store.close()


def test_a_bad_model_file_is_explained_and_the_app_stays_up(qtbot, tmp_path):
    bad = tmp_path / "holiday-photo.gguf"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a model")
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    win.show_chat()
    with qtbot.waitSignal(win.chat.problem, timeout=10000) as blocker:
        win.chat.load_model(str(bad))
    assert "holiday-photo.gguf is not a GGUF model file" in blocker.args[0]
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert win.chat.status.text() == blocker.args[0] and win.chat.engine is None
    assert win.chat.send_button.isEnabled() and win.isVisible()
    win.chat.input.setText("Hello?")
    win.chat.send()
    assert "open a model file first" in win.chat.status.text()
    win.close()


def test_stop_ends_the_answer_and_keeps_what_was_said(qtbot, tiny_gguf):
    from muse_desktop.demo_model import Variant
    from muse_desktop.store import Store

    store = Store()
    win = MainWindow(Settings(user_type_id="teenager"), store=store)
    qtbot.addWidget(win)
    win.show()
    win.show_chat()
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    win.chat.input.setText("Tell me a long story")
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.send()
        assert win.chat.stop_button.isEnabled()
        qtbot.mouseClick(win.chat.stop_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert win.chat.status.text() == "Stopped."
    saved = store.messages(store.conversations()[0].id)
    assert saved[0].content == "Tell me a long story"
    assert all(m.settings.get("stopped") == "cancelled" for m in saved[1:])
    win.close()
    store.close()


def test_regenerate_copy_and_history_after_reopening(qtbot, tiny_gguf, isolated_home):
    from PySide6.QtGui import QGuiApplication

    from muse_desktop.demo_model import Variant
    from muse_desktop.store import Store
    from muse_desktop.ui.chat import Bubble

    def open_window():
        win = MainWindow(load_settings().settings, store=Store())
        qtbot.addWidget(win)
        win.show()
        win.show_chat()
        return win

    from muse_desktop.settings import save_settings

    save_settings(Settings(user_type_id="farmer"))
    win = open_window()
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    win.chat.input.setText("When should I plant potatoes?")
    answer_and_wait(qtbot, win, win.chat.send)
    store = win.chat.store
    conversation = store.conversations()[0]
    first = store.messages(conversation.id)[1].content
    answer_and_wait(qtbot, win, lambda: qtbot.mouseClick(win.chat.regenerate_button, Qt.LeftButton))
    messages = store.messages(conversation.id)
    assert [m.role for m in messages] == ["user", "assistant"]  # replaced, not added
    assert messages[1].content != first
    assert [b.role for b in win.chat.findChildren(Bubble) if b.isVisible()] == ["user", "assistant"]
    qtbot.mouseClick(win.chat.copy_button, Qt.LeftButton)
    assert QGuiApplication.clipboard().text() == messages[1].content
    win.close()
    store.close()

    again = open_window()  # the model is reopened from the settings
    qtbot.waitUntil(lambda: again.chat.engine is not None and again.chat.worker is None, timeout=30000)
    assert again.chat.history.count() == 1
    assert again.chat.history.item(0).text().startswith("When should I plant potatoes?")
    again.chat.open_conversation(again.chat.history.item(0).data(Qt.UserRole))
    shown = [b.text() for b in again.chat.findChildren(Bubble)]
    assert shown == ["When should I plant potatoes?", messages[1].content]
    again.chat.input.setText("And carrots?")
    answer_and_wait(qtbot, again, again.chat.send)
    assert len(again.chat.store.messages(conversation.id)) == 4
    again.close()
    again.chat.store.close()


def test_the_demo_is_a_usable_default_with_no_model(qtbot, isolated_home):
    from muse_desktop.demo_model import DEMO_NOTICE

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    win.show_chat()
    with qtbot.waitSignal(win.chat.model_ready, timeout=60000):
        qtbot.mouseClick(win.chat.demo_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert win.chat.model_label.text() == DEMO_NOTICE and "random weights" in DEMO_NOTICE
    demo = load_settings().settings.model_path
    assert demo.startswith(str(isolated_home)) and demo.endswith(".gguf")
    win.chat.input.setText("Hello!")
    answer_and_wait(qtbot, win, win.chat.send)
    win.close()


def test_read_aloud_speaks_or_says_why_not(qtbot, tiny_gguf, tmp_path, monkeypatch):
    from muse_desktop.demo_model import Variant
    from muse_desktop.speech import find_backend

    monkeypatch.setenv("PATH", str(tmp_path))  # no speech engine on this PATH
    silent = MainWindow(Settings(user_type_id="older-adult"))
    qtbot.addWidget(silent)
    silent.show_chat()
    assert silent.chat.read_button.text() == "Read aloud (not available)"
    qtbot.mouseClick(silent.chat.read_button, Qt.LeftButton)
    assert "needs a speech engine" in silent.chat.status.text()
    silent.close()
    monkeypatch.undo()
    if find_backend() is None:
        return  # the rest needs a real engine (espeak-ng or speech-dispatcher)
    win = MainWindow(Settings(user_type_id="older-adult"))
    qtbot.addWidget(win)
    win.show()
    win.show_chat()
    assert win.chat.read_button.text() == "Read aloud"
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    win.chat.input.setText("Hello")
    answer_and_wait(qtbot, win, win.chat.send)
    qtbot.mouseClick(win.chat.read_button, Qt.LeftButton)
    assert win.chat.status.text().startswith("Reading the answer aloud")
    qtbot.mouseClick(win.chat.read_button, Qt.LeftButton)
    assert win.chat.status.text() == "Stopped reading." and not win.chat.speaker.speaking
    win.close()


def test_chat_controls_keep_their_whole_labels_at_200_percent(qtbot):
    win = MainWindow(Settings(user_type_id="older-adult"))
    qtbot.addWidget(win)
    win.resize(1000, 800)
    win.show()
    win.show_chat()
    for _ in range(4):
        win.zoom(+1)
    qtbot.wait(20)
    assert win.settings.zoom_percent == 200
    for button in win.chat.findChildren(QAbstractButton):
        if button.isVisible():
            assert button.width() >= button.sizeHint().width(), button.text()
            assert button.height() >= MIN_TARGET_PX
    assert win.chat.input.width() >= 600
    win.close()
