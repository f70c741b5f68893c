"""Every theme's colours, pair by pair, against WCAG 2.2; and focus as it is really drawn."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from muse_desktop.household.settings import Settings, Theme
from muse_desktop.ui.app import MainWindow
from muse_desktop.ui.theme import PALETTES, contrast_ratio, placeholder_colour, stylesheet

THEMES = [(Theme.NORMAL, 4.5), (Theme.DARK, 4.5), (Theme.HIGH_CONTRAST, 7.0)]
# (foreground, background) a person reads; the text bar of the theme applies.
TEXT_PAIRS = [("text", "window"), ("text", "field"), ("muted", "window"), ("muted", "field"),
              ("accent_text", "accent"), ("error", "window"), ("error", "field"), ("disabled", "window"),
              ("disabled", "field")]
# Edges a person must see (borders, check boxes, focus rings): 3:1 against what they touch.
EDGE_PAIRS = [("border", "window"), ("border", "field"), ("focus", "window"), ("focus", "field"),
              ("accent", "window")]


@pytest.mark.parametrize("theme, minimum", THEMES)
def test_every_text_pair_meets_its_bar(theme, minimum):
    palette = PALETTES[theme]
    ratios = {f"{fg} on {bg}": round(contrast_ratio(palette[fg], palette[bg]), 2) for fg, bg in TEXT_PAIRS}
    ratios["placeholder on field"] = round(contrast_ratio(placeholder_colour(theme), palette["field"]), 2)
    low = {pair: ratio for pair, ratio in ratios.items() if ratio < minimum}
    assert not low, low


@pytest.mark.parametrize("theme, _minimum", THEMES)
def test_every_edge_is_at_least_3_to_1(theme, _minimum):
    palette = PALETTES[theme]
    low = {f"{a} / {b}": round(contrast_ratio(palette[a], palette[b]), 2) for a, b in EDGE_PAIRS
           if contrast_ratio(palette[a], palette[b]) < 3.0}
    assert not low, low


@pytest.mark.parametrize("theme, _minimum", THEMES)
def test_disabled_looks_disabled(theme, _minimum):
    palette, sheet = PALETTES[theme], stylesheet(theme, 100)
    assert contrast_ratio(palette["disabled"], palette["text"]) >= 1.8  # another grey, not the same white
    for rule in ("QPushButton:disabled", "QMenu::item:disabled"):
        body = sheet.split(rule, 1)[1].split("}", 1)[0]
        assert "disabled" in sheet and "italic" in body, rule


@pytest.mark.parametrize("theme", [Theme.NORMAL, Theme.DARK, Theme.HIGH_CONTRAST])
def test_focus_on_a_primary_button_is_drawn_in_the_focus_colour(qtbot, isolated_home, theme):
    """The ring is read off the pixels: on the accent fill a ring would not be seen (1.2:1)."""
    win = MainWindow(Settings(user_type_id="adult", theme=theme))
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    qtbot.waitActive(win)
    button = win.page.start
    button.setFocus(Qt.TabFocusReason)
    qtbot.waitUntil(button.hasFocus)
    image = button.grab().toImage()
    palette = PALETTES[theme]
    edge = QColor(image.pixel(image.width() // 2, 1)).name().upper()
    inside = QColor(image.pixel(12, image.height() // 2)).name().upper()
    assert edge == palette["focus"], (edge, palette["focus"])
    assert contrast_ratio(edge, inside) >= 3.0 and contrast_ratio(edge, palette["window"]) >= 3.0
    button.clearFocus()
    qtbot.waitUntil(lambda: not button.hasFocus())
    unfocused = QColor(button.grab().toImage().pixel(image.width() // 2, 1)).name().upper()
    assert unfocused != palette["focus"]


@pytest.mark.parametrize("theme", [Theme.NORMAL, Theme.DARK, Theme.HIGH_CONTRAST])
@pytest.mark.parametrize("chosen", [False, True])
def test_focus_on_a_compare_score_button_is_drawn_in_the_focus_colour(qtbot, isolated_home, theme, chosen):
    """The 1–5 buttons: the ring on a chosen one (accent fill) and on one not chosen, read off the pixels."""
    win = MainWindow(Settings(user_type_id="adult", theme=theme))
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    qtbot.waitActive(win)
    win.tabs.setCurrentWidget(win._compare_scroll)
    page = win.compare
    page.rounds = [[{"id": 1, "answer": "A.", "question": "Q?", "user_type": "Child"}]]
    page.round_index = 0
    page.rating.show()
    page.show_round()
    score = page.score_boxes[0][1][0]
    button = score.buttons()[2 if chosen else 0]  # 3 is chosen at first
    assert button.isChecked() == chosen
    button.setFocus(Qt.TabFocusReason)
    qtbot.waitUntil(button.hasFocus)
    image = button.grab().toImage()
    palette = PALETTES[theme]
    edge = QColor(image.pixel(image.width() // 2, 1)).name().upper()
    inside = QColor(image.pixel(image.width() // 2, image.height() // 2 - image.height() // 4)).name().upper()
    assert edge == palette["focus"], (edge, palette["focus"])
    assert contrast_ratio(edge, inside) >= 3.0 and contrast_ratio(edge, palette["window"]) >= 3.0


@pytest.mark.parametrize("theme, minimum", THEMES)
def test_placeholder_text_as_drawn_meets_the_text_bar(qtbot, isolated_home, theme, minimum):
    """Read off the pixels: Qt draws a style-sheeted placeholder its own way unless told its colour."""
    win = MainWindow(Settings(user_type_id="adult", theme=theme))
    qtbot.addWidget(win)
    win.show()
    box = win.page.search
    box.clear()
    qtbot.wait(20)
    image = box.grab().toImage()
    field = PALETTES[theme]["field"]
    colours = {QColor(image.pixel(x, y)).name().upper() for x in range(12, image.width() // 2)
               for y in range(6, image.height() - 6)}
    strongest = max(colours, key=lambda c: contrast_ratio(c, field))
    assert contrast_ratio(strongest, field) >= minimum, (strongest, field)
    assert strongest == placeholder_colour(theme), strongest
