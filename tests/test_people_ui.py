"""The household in the window (issue 16): "Who is using MUsE?", switching, removing, the lock, the add-on."""

from __future__ import annotations

import json

import numpy as np
from helpers import answer_and_wait, last_logits
from test_atspi import atspi_python, run_and_walk  # noqa: F401 (the AT-SPI fixture and walker)
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QInputDialog, QMessageBox

from muse_desktop.chat.store import Store
from muse_desktop.household import lock
from muse_desktop.household import people as household
from muse_desktop.household.settings import Settings, load_settings, save_settings, settings_path
from muse_desktop.models.demo_model import Variant
from muse_desktop.ui.app import MainWindow
from muse_desktop.ui.chat import Bubble
from muse_desktop.ui.people import TILE_PX


def household_of_two(model: str = ""):
    """Grandma (older adult) and Leo (child) on one computer, nobody chosen yet."""
    store = Store()
    computer = Settings(model_path=model)
    grandma = household.add_person(store, "Grandma", computer, user_type_id="older-adult")
    leo = household.add_person(store, "Leo", computer, user_type_id="child")
    save_settings(computer)
    return store, grandma, leo


def open_window(qtbot, store):
    win = MainWindow(load_settings().settings, store=store)
    qtbot.addWidget(win)
    win.show()
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)
    return win


def click_tile(qtbot, win, person_id: int, wait_model: bool = False) -> None:
    qtbot.mouseClick(win.people_page.tiles[person_id], Qt.LeftButton)
    if wait_model:  # the saved model opens at launch, while the tiles show
        qtbot.waitUntil(lambda: win.chat.engine is not None and win.chat.worker is None, timeout=30000)


def ask(qtbot, win, question: str) -> None:
    win.chat.input.setText(question)
    answer_and_wait(qtbot, win, win.chat.send)


def test_the_people_page_comes_first_with_big_named_tiles(qtbot):
    store, grandma, leo = household_of_two()
    win = open_window(qtbot, store)
    assert win.pages.currentWidget() is win._people_scroll
    assert win.people_page.names() == ["Grandma, older adult", "Leo, child", "Someone new"]
    for tile in win.people_page._order:
        assert tile.width() >= 140 and tile.height() >= 140, tile.accessibleName()
    assert TILE_PX >= 140
    assert win.people_page.new_tile.hasFocus()  # nobody chosen yet: "Someone new"... or a tile by arrows
    qtbot.keyClick(win.people_page.new_tile, Qt.Key_Right)  # arrows go round the tiles
    assert win.people_page.tiles[grandma.id].hasFocus()
    qtbot.keyClick(win.people_page.tiles[grandma.id], Qt.Key_Return)  # Enter chooses
    assert win.settings.person_id == grandma.id and win.settings.user_type_id == "older-adult"
    assert win.pages.currentWidget() is win._model_scroll  # no model yet: the model step
    win.zoom(+1)
    win.zoom(+1)
    reopened = open_window(qtbot, store)  # the next start: the tiles again, the last person's focused
    assert reopened.pages.currentWidget() is reopened._people_scroll
    assert reopened.people_page.tiles[grandma.id].hasFocus()
    assert reopened.people_page.tiles[grandma.id].width() >= round(TILE_PX * 1.2)  # tiles grow with the text
    store.close()


def test_two_people_have_their_own_conversations_and_text_size_in_the_window(qtbot, tiny_gguf):
    store, grandma, leo = household_of_two(str(tiny_gguf[Variant.MINI_4K]))
    win = open_window(qtbot, store)
    click_tile(qtbot, win, grandma.id, wait_model=True)
    assert win.pages.currentWidget() is win.chat and win.chat.who.text() == "Answers for: Older adult"
    win.zoom(+1)
    ask(qtbot, win, "How do I call my son?")
    qtbot.mouseClick(win.chat.change_person, Qt.LeftButton)
    assert win.pages.currentWidget() is win._people_scroll
    click_tile(qtbot, win, leo.id)
    assert win.pages.currentWidget() is win.chat and win.chat.who.text() == "Answers for: Child"
    assert win.settings.zoom_percent == 100 and "14pt" in win.styleSheet()
    assert win.chat.history.count() == 0 and not [b for b in win.chat.findChildren(Bubble) if b.isVisible()]
    ask(qtbot, win, "Why is the sky blue?")
    assert [win.chat.history.item(i).text().split("\n")[0] for i in range(win.chat.history.count())] == [
        "Why is the sky blue?"]
    win.show_people()
    click_tile(qtbot, win, grandma.id)
    assert win.settings.zoom_percent == 125 and "18pt" in win.styleSheet()
    assert [win.chat.history.item(i).text().split("\n")[0] for i in range(win.chat.history.count())] == [
        "How do I call my son?"]
    assert [store.messages(c.id)[0].content for c in store.conversations(grandma.id)] == ["How do I call my son?"]
    assert [store.messages(c.id)[0].content for c in store.conversations(leo.id)] == ["Why is the sky blue?"]
    assert store.profile(leo.id).settings["zoom_percent"] == 100
    assert store.profile(grandma.id).settings["zoom_percent"] == 125


def test_preferences_recorded_in_the_chat_carry_the_persons_id(qtbot, tiny_gguf):
    store, grandma, leo = household_of_two(str(tiny_gguf[Variant.MINI_4K]))
    win = open_window(qtbot, store)
    click_tile(qtbot, win, leo.id, wait_model=True)
    chat = win.chat
    chat.preference_toggle.setChecked(True)
    chat.input.setText("Why do cats purr?")
    chat.send()
    qtbot.waitUntil(lambda: chat.worker is None and len(getattr(chat, "_candidates", [])) == 4, timeout=60000)
    chat.preference_panel.choose(best=1, worst=2, reason="Short and kind")
    chat.preference_panel.keep.click()
    qtbot.waitUntil(lambda: len(store.preferences()) == 1)
    assert [p["profile_id"] for p in store.preferences()] == [leo.id]
    assert store.preferences(grandma.id) == []
    assert [c.profile_id for c in store.conversations()] == [leo.id]


def test_switching_person_applies_their_add_on_without_reopening_the_model(qtbot, tiny_gguf, tiny_model, adapters,
                                                                           tmp_path):
    from converters.convert import convert_adapter
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings

    model = tiny_gguf[Variant.MINI_4K]
    addon = tmp_path / "leo-own.gguf"
    list(convert_adapter(adapters["all"], addon, tiny_model))
    store, grandma, leo = household_of_two(str(model))
    household.attach_adapter(store, leo.id, addon)
    win = open_window(qtbot, store)
    click_tile(qtbot, win, grandma.id, wait_model=True)
    engine = win.chat.engine
    ids = engine.prompt_ids("Child", [Turn("user", "Why is the sky blue?")])
    base = last_logits(engine, ids)
    assert win.chat.answering.text().endswith("(no add-on of your own yet)")
    assert win.chat.answering.isVisible() and win.chat.answering.accessibleName() == win.chat.answering.text()

    win.show_people()
    click_tile(qtbot, win, leo.id)
    assert win.chat.engine is engine and win.chat.worker is None  # the same open model, add-on applied
    assert [(s.path, s.scale) for s in engine.adapters] == [(str(addon), 1.0)]
    with_addon = last_logits(engine, ids)
    direct = ChatEngine(model, EngineSettings(context_length=win.settings.context_length, threads=2),
                        [AdapterSpec(str(addon), 1.0)])
    expected = last_logits(direct, ids)
    direct.close()
    np.testing.assert_allclose(with_addon, expected, rtol=0, atol=1e-4)
    assert np.abs(with_addon - base).max() > 1e-2
    assert win.chat.answering.text().endswith(", with Leo's own add-on")

    win.show_people()
    click_tile(qtbot, win, grandma.id)
    assert win.chat.engine is engine and engine.adapters == []
    np.testing.assert_allclose(last_logits(engine, ids), base, rtol=0, atol=1e-4)
    assert load_settings().settings.adapter_path == ""  # Leo's add-on never became the computer's


def test_someone_new_gives_a_name_then_says_who_they_are(qtbot, monkeypatch):
    store, grandma, leo = household_of_two()
    win = open_window(qtbot, store)
    monkeypatch.setattr(QInputDialog, "exec", lambda self: QDialog.Accepted)
    monkeypatch.setattr(QInputDialog, "textValue", lambda self: "Sam")
    qtbot.mouseClick(win.people_page.new_tile, Qt.LeftButton)
    sam = next(p for p in store.profiles() if p.name == "Sam")
    assert win.settings.person_id == sam.id and win.pages.currentWidget() is win._picker
    assert win.page.heading.text() == "Who is Sam?" and win.page.current() is None
    win.page.search.setText("nurse")
    qtbot.keyClick(win.page.search, Qt.Key_Return)
    assert store.profile(sam.id).user_type_id == "nurse"
    warned = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text, *a: warned.append(text))
    win.ask_new_person()  # "Sam" again
    assert warned and "already on this computer" in warned[0] and len(store.profiles()) == 3


def test_removing_a_person_asks_what_goes_then_removes_it(qtbot, monkeypatch):
    store, grandma, leo = household_of_two()
    for question in ("Why is the sky blue?", "What do bees make?"):
        conversation = store.create_conversation("Child", question, profile_id=leo.id)
        store.add_message(conversation.id, "user", question)
    store.add_preference("Child", [], "What do bees make?", [{"text": t} for t in "abcd"], 0, 1, profile_id=leo.id)
    win = open_window(qtbot, store)
    asked = []
    answer = [QMessageBox.No]
    monkeypatch.setattr(QMessageBox, "question", lambda _p, _t, text, *a: asked.append(text) or answer[0])
    qtbot.mouseClick(win.people_page.remove_buttons[leo.id], Qt.LeftButton)
    assert asked == ["Remove Leo from this computer?\n\nTheir 2 conversations and 1 choice between answers "
                     "will be deleted too. This cannot be undone."]
    assert len(store.profiles()) == 2 and len(store.conversations(leo.id)) == 2  # "No" keeps everything
    answer[0] = QMessageBox.Yes
    qtbot.mouseClick(win.people_page.remove_buttons[leo.id], Qt.LeftButton)
    assert [p.name for p in store.profiles()] == ["Grandma"]
    assert store.conversations() == [] and store.preferences() == []
    assert win.people_page.names() == ["Grandma, older adult", "Someone new"]
    # The person in use can be removed from here: then nobody uses MUsE until someone is chosen.
    click_tile(qtbot, win, grandma.id)
    win.show_people()
    qtbot.mouseClick(win.people_page.remove_buttons[grandma.id], Qt.LeftButton)
    assert store.profiles() == [] and win.settings.person_id == 0 and win.settings.user_type_id == ""
    assert win.people_page.names() == ["Someone new"] and "Nobody" in win.people_page.intro.text()
    assert win.people_page.new_tile.hasFocus()


def _lock(win, allow_switching: bool = False):
    dialog = win.open_kiosk()
    dialog.switching.setChecked(allow_switching)
    dialog.close()
    assert win.set_pin("2468") is None
    win.lock_now()
    assert lock.is_locked(win.settings)


def test_locked_the_person_is_fixed_even_after_a_restart_with_edited_settings(qtbot):
    store, grandma, leo = household_of_two()
    win = open_window(qtbot, store)
    click_tile(qtbot, win, grandma.id)
    _lock(win)
    assert win.pages.indexOf(win._people_scroll) < 0  # the people page is out of the window
    assert not win.chat.change_person.isVisible() and not win.chat.change_person.isEnabled()
    assert not win.change_person_action.isEnabled()
    win.show_people()
    win.choose_person(leo.id)  # whatever route reaches it
    assert win.settings.person_id == grandma.id and win.pages.currentWidget() is win.chat
    win.close()
    edited = json.loads(settings_path().read_text())  # a curious child edits the settings file
    edited.update(person_id=leo.id, user_type_id="child", lock_allows_switching=True)
    settings_path().write_text(json.dumps(edited))
    loaded = load_settings().settings
    assert (loaded.person_id, loaded.user_type_id, loaded.lock_allows_switching) == (grandma.id, "older-adult",
                                                                                      False)
    again = open_window(qtbot, store)
    assert again.pages.currentWidget() is again.chat and again.chat.who.text() == "Answers for: Older adult"
    assert again.pages.indexOf(again._people_scroll) < 0 and again.person().id == grandma.id


def test_locked_with_switching_allowed_people_switch_but_cannot_be_added_or_removed(qtbot, monkeypatch):
    store, grandma, leo = household_of_two()
    win = open_window(qtbot, store)
    click_tile(qtbot, win, grandma.id)
    _lock(win, allow_switching=True)
    assert win.chat.change_person.isEnabled()
    win.show_people()
    assert win.pages.currentWidget() is win._people_scroll
    assert win.people_page.names() == ["Grandma, older adult", "Leo, child"]  # no "Someone new"
    assert win.people_page.remove_buttons == {} and win.people_page.new_tile is None
    click_tile(qtbot, win, leo.id)
    assert win.settings.person_id == leo.id and win.chat.who.text() == "Answers for: Child"
    assert win.add_person("Sam") and [p.name for p in store.profiles()] == ["Grandma", "Leo"]
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.Yes)
    win.ask_remove_person(grandma.id)
    assert not win.remove_person(grandma.id) and len(store.profiles()) == 2
    win.close()
    edited = json.loads(settings_path().read_text())
    edited.update(person_id=grandma.id, user_type_id="older-adult")
    settings_path().write_text(json.dumps(edited))
    loaded = load_settings().settings  # the lock follows the person chosen, not the edited file
    assert (loaded.person_id, loaded.user_type_id) == (leo.id, "child") and loaded.lock_allows_switching


def test_a_damaged_lock_file_does_not_let_people_switch(qtbot):
    settings = Settings(user_type_id="child", lock_allows_switching=True)
    lock.set_pin(settings, "2468")
    lock.lock(settings)
    save_settings(settings)
    assert load_settings().settings.lock_allows_switching
    for path in lock.lock_paths():
        path.write_text("{ not a lock file")
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and not loaded.lock_allows_switching and not lock.can_switch_person(loaded)


def test_each_tile_opens_that_persons_own_model_window(qtbot):
    store, grandma, leo = household_of_two()
    win = open_window(qtbot, store)
    buttons = win.people_page.own_model_buttons
    assert set(buttons) == {grandma.id, leo.id} and win.own_model_action.isVisible()
    assert buttons[leo.id].text() == "My own model…"
    assert buttons[leo.id].accessibleName() == "Make a model that answers the way I like (Leo)"
    qtbot.mouseClick(buttons[leo.id], Qt.LeftButton)
    dialog = win._own_model_window
    assert dialog.isVisible() and dialog.person_id == leo.id
    assert dialog.windowTitle() == "Make a model that answers the way Leo likes"
    dialog.close()


def test_the_answering_line_says_whose_add_on_answers():
    store = Store()
    rose = household.add_person(store, "Rose", Settings())
    assert household.answering_text("MUsE", rose, []) == "Answering: MUsE (no add-on of your own yet)"
    rose = store.update_profile(rose.id, adapter_path="/x/rose.gguf")
    assert household.answering_text("MUsE", rose, ["/x/rose.gguf"]) == "Answering: MUsE, with Rose's own add-on"
    assert household.answering_text("MUsE", rose, []) == "Answering: MUsE (no add-on of your own yet)"
    assert household.answering_text("MUsE", None, []) == "Answering: MUsE"
    store.close()


def test_the_tiles_are_named_and_pressable_through_atspi(atspi_python, isolated_home, tiny_gguf):  # noqa: F811
    """What a screen reader meets first on a shared computer: one named tile per person, pressable."""
    store, grandma, leo = household_of_two(str(tiny_gguf[Variant.MINI_4K]))
    household.add_person(store, "Sam", Settings(), user_type_id="nurse")
    store.close()
    result = run_and_walk(atspi_python, ["Leo, child"], isolated_home)
    before, after = result["before"], result["after"]
    tiles = {n["name"]: n for n in before if n["role"] == "push button" and n["showing"]}
    for name in ("Grandma, older adult", "Leo, child", "Sam, nurse", "Someone new"):
        assert name in tiles and tiles[name]["enabled"] and tiles[name]["focusable"], (name, sorted(tiles))
    assert any(p["name"] == "Leo, child" for p in result["pressed"])
    assert [n["name"] for n in after if n["name"].startswith("Answers for:") and n["showing"]] == [
        "Answers for: Child"]
    assert load_settings().settings.person_id == leo.id
