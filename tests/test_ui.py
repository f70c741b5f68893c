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
