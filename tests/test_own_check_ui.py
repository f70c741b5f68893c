"""The person's own blind check window: real answers on a worker, picks with the buttons, the counts and the rule."""

from __future__ import annotations

import pytest

from muse_desktop.chat.store import Store
from muse_desktop.evaluation import own_check
from muse_desktop.household import people as household
from muse_desktop.household.settings import Settings
from muse_desktop.models.demo_model import Variant

CANDIDATES = [{"text": t, "framing": "muse", "temperature": 1.0} for t in ("one", "two", "three", "four")]
ASKED = ["How do I call my son?", "What is a good soup for winter?", "Why do leaves fall?", "Is tea good for me?"]


@pytest.fixture(scope="module")
def gguf_adapters(adapters, tiny_model, tmp_path_factory):
    from converters.convert import convert_adapter

    root = tmp_path_factory.mktemp("own-check-ui-adapters")
    files = {}
    for name in ("all", "rslora"):
        files[name] = root / f"{name}.gguf"
        list(convert_adapter(adapters[name], files[name], tiny_model))
    return files


@pytest.fixture
def household_of_two(tmp_path, tiny_gguf, gguf_adapters):
    store = Store(tmp_path / "muse.sqlite3")
    settings = Settings(model_path=str(tiny_gguf[Variant.MINI_4K]), threads=2, context_length=512)
    rose = household.add_person(store, "Rose", settings, user_type_id="older-adult")
    for question in ASKED:
        store.add_preference("Elderly", [], question, CANDIDATES, best=0, worst=1, profile_id=rose.id)
    sam = household.add_person(store, "Sam", settings, user_type_id="child")
    household.attach_adapter(store, sam.id, gguf_adapters["rslora"])
    yield store, settings, rose
    store.close()


def open_check(qtbot, settings, store, person_id, adapter):
    from muse_desktop.ui.own_check import OwnCheckWindow

    window = OwnCheckWindow(None, settings, store, person_id, str(adapter), seed=3, max_tokens=6)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.pages.currentWidget() is window.asking, timeout=60000)
    return window


def roles_on_screen(store, window) -> list[str]:
    """The role behind each answer now shown, A, B, C (what the person cannot see)."""
    roles = [c["role"] for c in store.own_check(window.check)["models"]]
    index = {row["id"]: row["model_index"] for row in store.own_check_results(window.check)}
    return [roles[index[box.answer_id]] for box in window.boxes]


def pick_with_buttons(qtbot, store, window, picks: list[str], marks: dict[str, int] | None = None) -> None:
    from PySide6.QtCore import Qt

    for number, role in enumerate(picks):
        assert window.round_label.text() == f"Question {number + 1} of {len(picks)}"
        assert not window.next_button.isEnabled()  # a pick first
        shown = roles_on_screen(store, window)
        assert [box.title() for box in window.boxes] == ["Answer A", "Answer B", "Answer C"]
        qtbot.mouseClick(window.boxes[shown.index(role)].best, Qt.LeftButton)
        for marked, mark in (marks or {}).items():
            qtbot.mouseClick(window.boxes[shown.index(marked)].marks.button(mark), Qt.LeftButton)
        assert window.next_button.isEnabled()
        qtbot.mouseClick(window.next_button, Qt.LeftButton)


def test_picks_through_the_buttons_end_in_the_stored_counts_and_the_new_model_kept(qtbot, household_of_two,
                                                                                   gguf_adapters):
    store, settings, rose = household_of_two
    window = open_check(qtbot, settings, store, rose.id, gguf_adapters["all"])
    first = window.boxes[0]
    assert window.question.text() == "“Is tea good for me?”"
    assert first.best.hasFocus() and first.best.accessibleDescription() == "Answer A is the best"
    from PySide6.QtWidgets import QGroupBox, QLabel

    on_screen = [w.text() for w in window.findChildren(QLabel)] + [w.title() for w in window.findChildren(QGroupBox)]
    names = [c["name"] for c in store.own_check(window.check)["models"]] + ["all.gguf", "rslora.gguf"]
    assert not [text for text in on_screen for name in names if name in text]  # blind
    assert sorted(box.text.text() for box in window.boxes) == sorted(
        row["answer"] or "(This model wrote nothing.)" for row in own_check.rounds(store, window.check)[0])
    pick_with_buttons(qtbot, store, window, ["new", "baseline", "new", "new"], marks={"new": 4})
    assert own_check.tally(store, window.check) == {"new": 3, "other": 0, "baseline": 1}
    ratings = [row["rating"] for row in store.own_check_answers(window.check) if row["rating"] is not None]
    assert ratings == [4, 4, 4, 4]
    assert window.pages.currentWidget() is window.result
    assert window.result_words.text() == ("You picked your new model 3 times out of 4, the usual MUsE once, and "
                                          "another person's model never. Your new model is now used for you.")
    assert window.anyway_button.isHidden()
    assert store.profile(rose.id).adapter_path == str(gguf_adapters["all"])
    assert own_check.checks_for(store, rose.id)[0]["decision"]["kept"] is True


def test_not_picked_more_than_the_usual_muse_it_stays_unless_chosen_anyway(qtbot, household_of_two, gguf_adapters):
    from PySide6.QtCore import Qt

    store, settings, rose = household_of_two
    window = open_check(qtbot, settings, store, rose.id, gguf_adapters["all"])
    decided = []
    window.decided.connect(lambda kept, path: decided.append((kept, path)))
    pick_with_buttons(qtbot, store, window, ["new", "baseline", "other", "baseline"])
    assert window.result_words.text().startswith("You picked your new model once out of 4, the usual MUsE twice")
    assert window.result_words.text().endswith("MUsE keeps answering you as before.")
    assert store.profile(rose.id).adapter_path == ""
    assert window.anyway_button.isVisible() and window.anyway_button.hasFocus()
    qtbot.mouseClick(window.anyway_button, Qt.LeftButton)
    assert "anyway" in window.result_words.text() and window.anyway_button.isHidden()
    assert store.profile(rose.id).adapter_path == str(gguf_adapters["all"])
    assert decided == [(False, str(gguf_adapters["all"])), (True, str(gguf_adapters["all"]))]


def test_a_person_without_choices_is_told_so_and_nothing_changes(qtbot, household_of_two, gguf_adapters):
    from muse_desktop.ui.own_check import OwnCheckWindow

    store, settings, _rose = household_of_two
    guest = household.add_person(store, "Guest", settings)
    window = OwnCheckWindow(None, settings, store, guest.id, str(gguf_adapters["all"]))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.pages.currentWidget() is window.result)
    assert "Guest has not chosen any answers yet" in window.result_words.text()
    assert window.anyway_button.isHidden() and store.profile(guest.id).adapter_path == ""


def test_the_check_can_be_done_with_the_keyboard_alone(qtbot, household_of_two, gguf_adapters):
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    store, settings, rose = household_of_two
    window = open_check(qtbot, settings, store, rose.id, gguf_adapters["all"])
    window.activateWindow()
    qtbot.waitUntil(lambda: window.boxes[0].best.hasFocus())
    from PySide6.QtGui import QAccessible
    from PySide6.QtWidgets import QPushButton

    def said(widget, what=QAccessible.Name) -> str:  # what a screen reader is told
        return QAccessible.queryAccessibleInterface(widget).text(what)

    shown = [w for w in window.findChildren(QPushButton) if w.isVisibleTo(window)]
    assert shown and all(said(w) == w.text() for w in shown)  # named by their visible words
    assert [said(box.best, QAccessible.Description) for box in window.boxes] == [
        "Answer A is the best", "Answer B is the best", "Answer C is the best"]
    assert [said(box.marks.button(3), QAccessible.Description) for box in window.boxes] == [
        "Answer A: 3 of 5", "Answer B: 3 of 5", "Answer C: 3 of 5"]
    for number in range(4):
        shown = roles_on_screen(store, window)
        target = window.boxes[shown.index("new")].best
        seen = []
        for _ in range(40):  # Tab until the new model's "This one is best" (the person does not know it is)
            if QApplication.focusWidget() is target:
                break
            seen.append((QApplication.focusWidget().text(), QApplication.focusWidget().isVisible()))
            qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Tab)
        assert QApplication.focusWidget() is target, (number, seen)
        qtbot.keyClick(target, Qt.Key_Space)
        assert target.text() == "✓ Picked as best"
        assert [box.best.text() for box in window.boxes].count("This one is best") == 2
        while QApplication.focusWidget() is not window.next_button:
            qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Tab)
        qtbot.keyClick(window.next_button, Qt.Key_Space)
    assert own_check.tally(store, window.check) == {"new": 4, "other": 0, "baseline": 0}
    assert window.close_button.hasFocus() and store.profile(rose.id).adapter_path == str(gguf_adapters["all"])


def test_in_the_window_try_it_opens_her_check_and_a_kept_add_on_answers_her_at_once(qtbot, household_of_two,
                                                                                     gguf_adapters):
    """MainWindow wires the two windows: the own-model window's "Try it" opens the blind check; when the
    new add-on is kept, the chat's engine has it for Rose right away (no restart, no reopening)."""
    from helpers import window_with_model

    store, settings, rose = household_of_two
    household.switch_in_place(settings, store.profile(rose.id))
    win = window_with_model(qtbot, settings, settings.model_path, store=store)
    assert win.chat.engine.adapters == []
    made = win.open_own_model(rose.id)
    assert made.isVisible() and made.count_words.text().startswith("You have chosen 4 answers")
    made.check_requested.emit(rose.id, str(gguf_adapters["all"]))  # what "Try it" sends at the end of a run
    check = win._own_check_window
    assert check.isVisible()
    qtbot.waitUntil(lambda: check.pages.currentWidget() is check.asking, timeout=60000)
    with qtbot.waitSignal(check.decided, timeout=10000):
        pick_with_buttons(qtbot, store, check, ["new", "new", "baseline", "new"])
    qtbot.waitUntil(lambda: not win.chat.busy, timeout=30000)
    assert [spec.path for spec in win.chat.engine.adapters] == [str(gguf_adapters["all"])]
    assert store.profile(rose.id).adapter_path == str(gguf_adapters["all"])
    assert "Rose" in win.chat.answering.text()
    made.close()
    check.close()
