"""Compare's fields, scores and words; announcements of the changes that matter (issue 14)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QPlainTextEdit,
)

from muse_desktop.household import lock
from muse_desktop.evaluation.compare import MEASURES
from muse_desktop.base.events import Done
from muse_desktop.household.settings import Settings
from muse_desktop.ui import widgets
from muse_desktop.ui.app import UNLOCKED_MESSAGE, MainWindow
from muse_desktop.ui.compare import MEANING, MEASURE_LEGEND, OPEN_IN_CHAT, SHORT

ROOT = Path(__file__).resolve().parent.parent
ROUND = [[{"id": i, "answer": f"Answer text {i}.", "question": "Why is the sky blue?", "user_type": "Child"}
          for i in (1, 2)]]


def _rating(page) -> None:
    page.rounds, page.round_index = ROUND, 0
    page.rating.show()
    page.show_round()


def test_compare_offers_the_model_open_in_the_chat(qtbot, isolated_home, tiny_gguf):
    from muse_desktop.models.demo_model import Variant

    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    names = lambda: [win.compare.models.item(i).text() for i in range(win.compare.models.count())]  # noqa: E731
    assert not [n for n in names() if n.startswith(OPEN_IN_CHAT)]
    path = str(tiny_gguf[Variant.MINI_4K])
    win.chat.set_user_type(win.page.current(), open_saved_model=False)
    win.chat.load_model(path)  # opened in the chat after Compare was made
    qtbot.waitUntil(lambda: win.chat.engine is not None and win.chat.worker is None, timeout=30000)
    win.tabs.setCurrentWidget(win._compare_scroll)
    assert names()[0] == OPEN_IN_CHAT + Path(path).stem, names()
    win.compare.models.item(0).setCheckState(win.compare.models.item(0).checkState().Checked)
    win.compare.refresh_models()  # shown again: what was ticked stays ticked
    assert [c.path for c in win.compare.chosen()] == [path]


def test_every_compare_field_has_a_visible_label_that_is_its_name(qtbot, isolated_home):
    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    page = win.compare
    _rating(page)
    labels = {label.buddy(): label.text().rstrip(":") for label in page.findChildren(QLabel) if label.buddy()}
    fields = page.findChildren(QLineEdit) + page.findChildren(QPlainTextEdit) + page.findChildren(QListWidget)
    assert len(fields) == 4
    for field in fields:
        assert field in labels, f"{field.accessibleName()!r} has no visible label"
        assert field.accessibleName() == labels[field]
    assert not page.findChildren(QAbstractSpinBox)  # scores are buttons now


def test_scores_are_five_big_buttons_named_by_their_numbers(qtbot, isolated_home):
    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    win.resize(900, 640)
    win.show()
    win.tabs.setCurrentWidget(win._compare_scroll)
    page = win.compare
    _rating(page)
    qtbot.wait(50)
    for position, (_answer, scores) in enumerate(page.score_boxes, start=1):
        assert [s.measure for s in scores] == list(MEASURES)
        for score in scores:
            assert score.word.text() == SHORT[score.measure]
            buttons = score.buttons()
            assert [b.text() for b in buttons] == ["1", "2", "3", "4", "5"]
            for button in buttons:
                assert button.width() >= 44 and button.height() >= 44, button.size()
                assert button.accessibleDescription().startswith(f"{SHORT[score.measure]} of answer {position}")
            buttons[4].click()
            assert score.value() == 5 and [b.isChecked() for b in buttons] == [False] * 4 + [True]
    page.rate_current([(1, 2, 3), (4, 5, 1)])
    assert [[s.value() for s in scores] for _a, scores in page.score_boxes] == [[1, 2, 3], [4, 5, 1]]


def test_the_measures_have_the_same_words_in_the_rating_the_results_and_the_readme(qtbot, isolated_home):
    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    page = win.compare
    readme = " ".join((ROOT / "README.md").read_text().split())
    for measure in MEASURES:
        told = f"{SHORT[measure]}: {MEANING[measure]}"
        assert told in MEASURE_LEGEND
        assert told in page.rating_legend.text() and told in page.results_legend.text()
        assert f"{SHORT[measure]} ({MEANING[measure]})" in readme, measure


def test_the_status_changes_that_matter_are_announced(qtbot, isolated_home, monkeypatch):
    told = []
    real = widgets.announce
    monkeypatch.setattr(widgets, "announce", lambda widget, message, assertive=False: (
        told.append((message, assertive)), real(widget, message, assertive))[1])
    settings = Settings(user_type_id="adult")
    lock.set_pin(settings, "2468")
    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.lock_now()
    assert (lock.LOCKED_MARK, False) in told and win.lock_mark.isVisibleTo(win)
    assert win.unlock("2468").ok
    assert (UNLOCKED_MESSAGE, False) in told and not win.lock_mark.isVisibleTo(win)
    chat = win.chat
    chat.set_user_type(win.page.current(), open_saved_model=False)
    chat._failed("The model could not answer.")
    assert ("The model could not answer.", True) in told  # a failure is said at once
    chat._answered(Done("", data={"text": "", "stopped": "cancelled", "sampling": {}}))
    assert ("Stopped.", False) in told


def test_no_words_on_screen_send_a_person_to_a_terminal():
    """What the app shows never says to type a command (pip, apt, sudo, a package to install)."""
    import ast

    sources = sorted((ROOT / "muse_desktop" / "ui").glob("*.py")) + [ROOT / "muse_desktop/speech/speaker.py"]
    found = []
    for source in sources:
        tree = ast.parse(source.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                words = node.value.lower()
                if any(w in words for w in ("pip install", "apt install", "apt-get", "sudo ", "terminal",
                                            "install speech-dispatcher")):
                    found.append(f"{source.name}:{node.lineno}: {node.value[:60]!r}")
    assert not found, found


def test_help_lists_every_keyboard_shortcut_the_window_has(qtbot, isolated_home):
    from PySide6.QtGui import QAction, QKeySequence, QShortcut

    from muse_desktop.ui.app import SHORTCUTS

    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    keys = {a.shortcut() for a in win.findChildren(QAction) if not a.shortcut().isEmpty()}
    keys |= {s.key() for s in win.findChildren(QShortcut) if not s.key().isEmpty()}
    listed = SHORTCUTS.replace(" and ", "+")
    for key in keys:
        words = key.toString(QKeySequence.NativeText)
        assert words in listed or words.replace("Ctrl++", "Ctrl+Plus") in listed or words in (
            "Ctrl++", "Ctrl+-", "Ctrl+=", "Ctrl+0"), (words, SHORTCUTS)
    assert "F1" in SHORTCUTS and "Ctrl+Space" in SHORTCUTS


def test_a_click_anywhere_on_a_model_row_ticks_it_once(qtbot, isolated_home, tmp_path):
    """Compare's model list: the row is the target (its box alone was 14 px), and a click on the box ticks once."""
    from PySide6.QtCore import QPoint, Qt
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    win = MainWindow(Settings(user_type_id="adult"))
    qtbot.addWidget(win)
    win.resize(1000, 700)
    win.show()
    win.tabs.setCurrentWidget(win._compare_scroll)
    page = win.compare
    page._add("Model A", str(tmp_path / "a.gguf"))
    qtbot.wait(50)
    item = page.models.item(page.models.count() - 1)
    rect = page.models.visualItemRect(item)
    assert rect.height() >= 44, rect
    viewport = page.models.viewport()
    qtbot.mouseClick(viewport, Qt.LeftButton, pos=QPoint(rect.center().x() + rect.width() // 4, rect.center().y()))
    assert item.checkState() == Qt.Checked  # on the words
    option = QStyleOptionViewItem()
    option.initFrom(page.models)
    option.rect = rect
    option.features |= QStyleOptionViewItem.HasCheckIndicator
    box = page.models.style().subElementRect(QStyle.SE_ItemViewItemCheckIndicator, option, page.models)
    qtbot.mouseClick(viewport, Qt.LeftButton, pos=box.center())
    assert item.checkState() == Qt.Unchecked  # on the box itself: once, not twice
