"""The window, offscreen: choosing a user type persists it; accessibility checks walk the widgets."""

from __future__ import annotations

import os

import pytest
from helpers import answer_and_wait, load_model_and_wait, wait_for_model
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QAbstractButton, QAbstractItemView, QLineEdit

from muse_desktop.household.settings import Settings, Theme, load_settings
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


def exposed_name(widget) -> str:
    """The name Qt gives assistive technology (for a button with no set name: its text)."""
    from PySide6.QtGui import QAccessible

    return QAccessible.queryAccessibleInterface(widget).text(QAccessible.Name)


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


@pytest.mark.parametrize("theme, minimum", [(Theme.NORMAL, 4.5), (Theme.DARK, 4.5), (Theme.HIGH_CONTRAST, 7.0)])
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


def test_talking_to_a_model_streams_the_answer_and_saves_both_messages(qtbot, tiny_gguf, isolated_home, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from muse_desktop.models.demo_model import Variant
    from muse_desktop.chat.store import Store
    from muse_desktop.ui.chat import Bubble

    store = Store()
    win = MainWindow(Settings(user_type_id="older-adult"), store=store)
    qtbot.addWidget(win)
    win.show()
    qtbot.mouseClick(win.page.start, Qt.LeftButton)
    # No model yet: the second step of the first run asks which one.
    assert win.pages.currentWidget() is win._model_scroll
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(tiny_gguf[Variant.MINI_4K]), ""))
    wait_for_model(qtbot, win, lambda: qtbot.mouseClick(win.model_page.open_button, Qt.LeftButton))
    assert win.pages.currentWidget() is win.chat and win.chat.who.text() == "Answers for: Older adult"
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
        win.use_model(str(bad))
    assert "holiday-photo.gguf is not a GGUF model file" in blocker.args[0]
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert win.chat.status.text() == blocker.args[0] and win.chat.engine is None
    assert win.chat.send_button.isEnabled() and win.isVisible()
    win.chat.input.setText("Hello?")
    win.chat.send()
    assert "There is no model yet" in win.chat.status.text()
    assert load_settings().settings.model_path == ""  # a bad file is never remembered
    win.close()


def test_stop_ends_the_answer_and_keeps_what_was_said(qtbot, tiny_gguf):
    from muse_desktop.models.demo_model import Variant
    from muse_desktop.chat.store import Store

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

    from muse_desktop.models.demo_model import Variant
    from muse_desktop.chat.store import Store
    from muse_desktop.ui.chat import Bubble

    def open_window():
        win = MainWindow(load_settings().settings, store=Store())
        qtbot.addWidget(win)
        win.show()
        win.show_chat()
        return win

    from muse_desktop.household.settings import save_settings

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
    from muse_desktop.ui.chat import PRACTICE_MODEL

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    win.show_chat()
    assert win.pages.currentWidget() is win._model_scroll
    assert "has not learnt anything" in win.model_page.demo_button.accessibleDescription()
    wait_for_model(qtbot, win, lambda: qtbot.mouseClick(win.model_page.demo_button, Qt.LeftButton), timeout=60000)
    assert win.chat.model_label.text() == PRACTICE_MODEL and "nonsense" in PRACTICE_MODEL
    demo = load_settings().settings.model_path
    assert demo.startswith(str(isolated_home)) and demo.endswith(".gguf")
    win.chat.input.setText("Hello!")
    answer_and_wait(qtbot, win, win.chat.send)
    win.close()


def test_read_aloud_speaks_or_says_why_not(qtbot, tiny_gguf, tmp_path, monkeypatch):
    from muse_desktop.models.demo_model import Variant
    from muse_desktop.speech.speaker import find_backend

    # Only PATH changes here: monkeypatch.undo() would also undo the isolated MUSE_HOME and
    # let the rest of the test write into the real user folders (it once did).
    with monkeypatch.context() as local:
        local.setenv("PATH", str(tmp_path))  # no speech engine on this PATH
        # The computer's own voice is what this test is about (the natural voice: test_speech_ui.py).
        silent = MainWindow(Settings(user_type_id="older-adult", voice_id="system"))
        qtbot.addWidget(silent)
        silent.show_chat()
        assert silent.chat.read_button.text() == "Read aloud (not available)"
        qtbot.mouseClick(silent.chat.read_button, Qt.LeftButton)
        assert "needs a speech engine" in silent.chat.status.text()
        silent.close()
    assert os.environ["MUSE_HOME"].startswith(str(tmp_path))
    if find_backend() is None:
        return  # the rest needs a real engine (espeak-ng or speech-dispatcher)
    win = MainWindow(Settings(user_type_id="older-adult", voice_id="system"))
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
    win.chat.set_user_type(win.page.current())
    win.pages.setCurrentWidget(win.chat)  # the chat page as it looks before a model is open
    for _ in range(4):
        win.zoom(+1)
    qtbot.wait(20)
    assert win.settings.zoom_percent == 200
    shown = [b for b in win.chat.findChildren(QAbstractButton) if b.isVisible()]
    # One row of big buttons; everything else is one press away under More.
    assert [b.text() for b in shown if b.parentWidget() is win.chat.send_button.parentWidget()] == [
        "Send", "Stop", "Read aloud" if win.chat.speaker.available else "Read aloud (not available)", "More"]
    for button in shown:
        assert button.width() >= button.sizeHint().width(), button.text()
        assert button.height() >= MIN_TARGET_PX
    assert win.chat.input.width() >= 600
    under_more = [a.text() for a in win.chat.more_menu.actions() if a.isVisible()]
    assert {"Try again", "Copy", "New chat", "Choose from 4", "Conversations", "Change model",
            "Change who I am"} <= set(under_more), under_more
    assert not win.chat.side.isVisible()  # the list gives way at large zoom, one press away
    next(a for a in win.chat.more_menu.actions() if a.text() == "Conversations").trigger()
    assert win.chat.side.isVisible()
    win.show_model_page()
    qtbot.wait(20)
    page = win.model_page
    for button in page.findChildren(QAbstractButton):
        if button.isVisible():
            assert button.width() >= button.sizeHint().width(), button.text()
            assert button.height() >= MIN_TARGET_PX and exposed_name(button)
            assert button.mapTo(page, button.rect().topRight()).x() <= page.width()
    win.close()


def test_get_muse_from_the_first_run_wizard_with_progress_and_cancel(qtbot, tmp_path, tiny_model, adapters,
                                                                    isolated_home):
    import shutil

    from hub_server import FakeHub

    from muse_desktop.models.download import PARTIAL_DIR

    root = tmp_path / "hub"
    shutil.copytree(tiny_model, root / "microsoft" / "Phi-3-mini-128k-instruct")
    shutil.copytree(adapters["all"], root / "muse" / "adapter")
    with FakeHub(root) as hub:
        win = MainWindow(Settings(user_type_id="child", hub_endpoint=hub.endpoint, muse_adapter_repo="muse/adapter"))
        qtbot.addWidget(win)
        win.show()
        qtbot.mouseClick(win.page.start, Qt.LeftButton)
        page = win.model_page
        assert win.pages.currentWidget() is win._model_scroll
        assert "has not been published" not in page.get_button.accessibleDescription()

        hub.throttle_s = 0.05  # slow enough to press Cancel in the middle
        seen = []
        qtbot.mouseClick(page.get_button, Qt.LeftButton)
        qtbot.waitUntil(page.ways.isVisible, timeout=20000)  # the two ways, with sizes, before any download
        assert not [p for p, _ in hub.requests if "/resolve/" in p and p.endswith(".safetensors")]
        assert " GB" in page.merged_text.text() and " GB" in page.addon_text.text()
        qtbot.mouseClick(page.merged_button, Qt.LeftButton)
        page.worker.progress.connect(lambda done, total, unit, _m: seen.append((done, total, unit)))
        models = isolated_home / "data" / "models"

        def weights_partly_here():
            return [p for p in models.rglob(f"{PARTIAL_DIR}/*.safetensors.incomplete") if p.stat().st_size > 0]

        qtbot.waitUntil(lambda: bool(weights_partly_here()), timeout=20000)
        assert page.progress.isVisible() and page.cancel_button.isVisible()
        assert not page.demo_button.isEnabled()
        qtbot.waitUntil(lambda: any(unit == "bytes" and 0 < done < total for done, total, unit in seen),
                        timeout=10000)
        qtbot.waitUntil(lambda: "MB of" in page.status.text(), timeout=10000)  # progress in words
        qtbot.mouseClick(page.cancel_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: page.worker is None, timeout=20000)
        assert "kept" in page.status.text() and page.get_button.isEnabled()
        partial = weights_partly_here()[0]
        assert win.pages.currentWidget() is win._model_scroll

        hub.throttle_s = 0.0
        qtbot.mouseClick(page.get_button, Qt.LeftButton)
        qtbot.waitUntil(page.ways.isVisible, timeout=20000)
        wait_for_model(qtbot, win, lambda: qtbot.mouseClick(page.merged_button, Qt.LeftButton), timeout=60000)
        assert hub.range_requests(partial.name.removesuffix(".incomplete"))  # continued, not started again
    assert win.pages.currentWidget() is win.chat
    assert load_settings().settings.model_path.endswith("muse-phi3-mini-128k-Q4_K_M.gguf")
    assert win.chat.model_label.text() == "Model: muse-phi3-mini-128k-Q4_K_M"
    win.chat.input.setText("Hello")
    answer_and_wait(qtbot, win, win.chat.send)
    win.close()


def test_get_muse_as_an_add_on_from_the_model_page_then_turn_it_down_in_the_chat(qtbot, tmp_path, tiny_model,
                                                                                 isolated_home):
    import json
    import shutil

    from helpers import make_peft_adapter
    from hub_server import FakeHub

    from muse_desktop.chat.store import Store

    root = tmp_path / "hub"
    shutil.copytree(tiny_model, root / "microsoft" / "Phi-3-mini-128k-instruct")
    # A trained-sized add-on (each module changes by about a tenth): the page checks the
    # result against transformers by the F16 bar, which the oversized test adapters exceed.
    make_peft_adapter(tiny_model, root / "seohyunqkr" / "MUsE", b_scale=0.3)
    config = json.loads((root / "seohyunqkr" / "MUsE" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "microsoft/Phi-3-mini-128k-instruct"
    (root / "seohyunqkr" / "MUsE" / "adapter_config.json").write_text(json.dumps(config))
    store = Store()
    with FakeHub(root) as hub:
        win = MainWindow(Settings(user_type_id="child", hub_endpoint=hub.endpoint), store=store)
        qtbot.addWidget(win)
        win.show()
        qtbot.mouseClick(win.page.start, Qt.LeftButton)
        page = win.model_page
        qtbot.mouseClick(page.get_button, Qt.LeftButton)
        qtbot.waitUntil(page.ways.isVisible, timeout=20000)
        assert "adapter" not in page.addon_text.text().lower() and ".gguf" not in page.addon_text.text()
        wait_for_model(qtbot, win, lambda: qtbot.mouseClick(page.addon_button, Qt.LeftButton), timeout=60000)
    chat = win.chat
    assert [a.scale for a in chat.engine.adapters] == [1.0]
    assert load_settings().settings.adapter_path.endswith("muse-lora-phi3-mini-128k-F16.gguf")
    assert chat.addon_strength.isVisible() and chat.addon_strength.accessibleName()
    chat.addon_strength.setCurrentIndex(chat.addon_strength.findData(0.0))  # off: the base alone
    assert [a.scale for a in chat.engine.adapters] == [0.0]
    assert load_settings().settings.adapter_scale == 0.0
    win.show_model_page()
    items = [page.library.item(i).text() for i in range(page.library.count())]
    assert any(text.startswith("MUsE — Phi-3-mini with the MUsE add-on, ") for text in items), items
    assert not any(".gguf" in text for text in items)
    win.close()


def test_conversations_can_be_renamed_saved_and_deleted(qtbot, tiny_gguf, tmp_path, monkeypatch):
    import json

    from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

    from muse_desktop.models.demo_model import Variant
    from muse_desktop.chat.store import Store

    store = Store()
    win = MainWindow(Settings(user_type_id="nurse"), store=store)
    qtbot.addWidget(win)
    win.show()
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    for question in ("What is a fever?", "How do I take a pulse?"):
        win.chat.new_conversation()
        win.chat.input.setText(question)
        answer_and_wait(qtbot, win, win.chat.send)
    chat = win.chat
    assert chat.history.count() == 2
    older = chat.history.item(1)
    chat.history.setCurrentItem(older)
    older_id = older.data(Qt.UserRole)

    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("Fever notes", True))
    qtbot.mouseClick(chat.rename_button, Qt.LeftButton)
    assert store.conversation(older_id).title == "Fever notes"
    assert any(chat.history.item(i).text().startswith("Fever notes") for i in range(chat.history.count()))

    target = tmp_path / "fever"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Data for programs (*.json)"))
    chat.history.setCurrentItem(chat.history.item([chat.history.item(i).data(Qt.UserRole)
                                                   for i in range(chat.history.count())].index(older_id)))
    qtbot.mouseClick(chat.export_button, Qt.LeftButton)
    exported = json.loads((tmp_path / "fever.json").read_text("utf-8"))
    assert exported == store.export_json(older_id) and exported["messages"][0]["content"] == "What is a fever?"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "fever.md"), "x (*.md)"))
    qtbot.mouseClick(chat.export_button, Qt.LeftButton)
    assert (tmp_path / "fever.md").read_bytes().decode("utf-8") == store.export_markdown(older_id)

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.No)
    qtbot.mouseClick(chat.delete_button, Qt.LeftButton)
    assert len(store.conversations()) == 2  # "No" keeps it
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.Yes)
    qtbot.mouseClick(chat.delete_button, Qt.LeftButton)
    assert [c.title for c in store.conversations()] == ["How do I take a pulse?"]
    assert chat.history.count() == 1 and "Deleted “Fever notes”" in chat.status.text()
    win.close()
    store.close()


def test_the_colours_follow_the_system_until_a_theme_is_chosen(window, monkeypatch):
    from PySide6.QtGui import QGuiApplication, QStyleHints

    assert window.settings.theme == Theme.AUTO and window.effective_theme() == Theme.NORMAL
    monkeypatch.setattr(QStyleHints, "colorScheme", lambda self: Qt.ColorScheme.Dark)
    QGuiApplication.styleHints().colorSchemeChanged.emit(Qt.ColorScheme.Dark)
    assert window.effective_theme() == Theme.DARK and PALETTES[Theme.DARK]["window"] in window.styleSheet()
    window.theme_actions[Theme.NORMAL].trigger()  # an explicit choice wins over the system
    assert PALETTES[Theme.NORMAL]["window"] in window.styleSheet()
    assert load_settings().settings.theme == Theme.NORMAL
    window.contrast.trigger()
    assert window.theme_actions[Theme.HIGH_CONTRAST].isChecked()
    assert PALETTES[Theme.HIGH_CONTRAST]["window"] in window.styleSheet()


def test_every_control_on_every_page_is_reachable_with_the_tab_key(qtbot):
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    pages = [(win.pages.widget(0), None), (win._model_scroll, win.show_model_page)]
    pages.append((win.chat, lambda: (win.chat.set_user_type(win.page.current()), win.pages.setCurrentWidget(win.chat))))
    for page, show in pages:
        if show:
            show()
        qtbot.wait(10)
        controls = [w for w in interactive_widgets(win) if page.isAncestorOf(w)]
        assert controls
        # The four tiles are one group: Tab reaches one of them, the arrow keys the others
        # (tests/test_keyboard.py presses them).
        tiles = list(win.page.tiles.values())
        if page.isAncestorOf(tiles[0]):
            assert sum(bool(t.focusPolicy() & Qt.TabFocus) for t in tiles) == 1
            controls = [c for c in controls if c not in tiles or c.focusPolicy() & Qt.TabFocus]
        for control in controls:
            assert control.focusPolicy() & Qt.TabFocus, exposed_name(control)
            assert exposed_name(control)
        # Walk the real focus chain from the first control: every control comes up.
        start = controls[0]
        reached, widget = set(), start
        for _ in range(500):
            widget = widget.nextInFocusChain()
            reached.add(widget)
            if widget is start:
                break
        assert set(controls) <= reached
    win.close()


def test_trainer_tab_runs_cancels_resumes_exports_and_chats(qtbot, tmp_path, tiny_model, isolated_home):
    import json

    from muse_desktop.ui.trainer import run_status

    data = tmp_path / "facts.jsonl"
    rows = [("Child", "What colour is the sky?", "Blue on a sunny day."),
            ("Elderly", "How do I call my grandson?", "Press the green button."),
            ("Farmer", "When do I plant potatoes?", "In spring."),
            ("Nurse", "What is a normal pulse?", "Sixty to one hundred."),
            ("Child", "Why do cats purr?", "They feel happy."),
            ("Teenager", "How can I sleep better?", "No phone before bed.")]
    data.write_text("".join(json.dumps({"user_type": u, "question": q, "answer": a}) + "\n" for u, q, a in rows)
                    + "{broken\n")
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.resize(1000, 900)
    win.show()
    win.tabs.setCurrentIndex(1)
    page = win.trainer
    page.base_model.setText(str(tiny_model))
    page.dataset.setText(str(data))
    page.check_data()
    qtbot.waitUntil(lambda: page.worker is None, timeout=60000)
    report = page.report.toPlainText()
    assert "6 usable, 1 skipped" in report and "line 7: invalid JSON" in report
    assert "One pass over the data takes" in report

    page.advanced_toggle.click()
    options = page.options
    options["max_steps"].setValue(300)
    options["batch_size"].setValue(2)
    options["lora_r"].setValue(8)
    options["lora_alpha"].setValue(16)
    options["save_steps"].setValue(5)
    options["learning_rate"].setText("5e-3")
    qtbot.mouseClick(page.start_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: len(page.chart.series["train_loss"]) >= 12, timeout=60000)
    assert page.cancel_button.isEnabled() and not page.start_button.isEnabled()
    assert "Step" in page.status.text() and "tokens/s" in page.status.text()
    assert "Training loss" in page.chart.accessibleDescription()
    qtbot.mouseClick(page.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.worker is None, timeout=60000)
    assert "stopped" in page.status.text().lower()
    assert "can be resumed" in run_status(page.run_dir) and page.resume_button.isEnabled()

    qtbot.mouseClick(page.resume_button, Qt.LeftButton)
    # Waits sized for a busy 2-core machine (300 steps, then the before/after evaluation).
    qtbot.waitUntil(lambda: page.worker is None, timeout=300000)
    assert page.status.text().startswith("Training finished after 300 steps"), page.status.text()
    assert run_status(page.run_dir).startswith("finished, 300 steps")
    first, last = page.chart.series["train_loss"][0][1], page.chart.series["train_loss"][-1][1]
    assert last < first / 2
    assert page.chart.series["val_loss"]  # validation points arrived too
    assert "BLEU" in page.log.toPlainText()  # the before/after evaluation

    qtbot.mouseClick(page.export_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.worker is None, timeout=300000)  # merge, check by logits, quantize, check
    assert page.status.text().startswith("Exported to") and page.chat_button.isEnabled(), page.status.text()
    assert [entry.kind for entry in win.store.library()] == ["model"]
    with qtbot.waitSignal(win.chat.model_ready, timeout=30000):
        qtbot.mouseClick(page.chat_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: win.chat.worker is None)  # the buttons come back when the loading is over
    assert win.tabs.currentIndex() == 0 and win.pages.currentWidget() is win.chat
    assert win.chat.model_label.text().endswith("-Q4_K_M")
    # The export stays in the model library: one click on the model page opens it again.
    qtbot.mouseClick(win.chat.change_model, Qt.LeftButton)
    library = win.model_page.library
    assert library.isVisible() and library.count() == 1 and "model" in library.item(0).text()
    with qtbot.waitSignal(win.chat.model_ready, timeout=30000):
        library.itemClicked.emit(library.item(0))
    assert win.pages.currentWidget() is win.chat
    win.close()


def test_reproduce_muse_is_one_click_the_muse_dataset_with_the_muse_3_recipe(qtbot, tmp_path, tiny_model,
                                                                              isolated_home):
    import shutil

    from hub_server import FakeHub
    from test_muse_dataset import muse_records, write_all

    from muse_desktop.base.paths import user_dirs

    root = tmp_path / "hub"
    (root / "datasets" / "seohyunqkr" / "MUsE").mkdir(parents=True)
    files = write_all(tmp_path / "files", muse_records())
    shutil.copyfile(files["parquet"], root / "datasets" / "seohyunqkr" / "MUsE" / "train.parquet")
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    win.tabs.setCurrentIndex(1)
    page = win.trainer
    page.reproduce_button.click()  # no base model yet: it says where to get it
    assert "Get MUsE" in page.status.text() and page.worker is None
    shutil.copytree(tiny_model, user_dirs().models / "Phi-3-mini-128k-instruct")  # what Get MUsE keeps
    page.preset.setCurrentIndex(page.preset.findData("qlora"))
    with FakeHub(root) as hub:
        page.settings.hub_endpoint = hub.endpoint
        qtbot.mouseClick(page.reproduce_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: page.run_dir is not None and page.worker is None, timeout=180000)
    assert page.dataset.text().endswith("train.parquet") and page.preset.currentData() == "muse-3"
    assert page.status.text().startswith("Training finished"), page.status.text()
    from muse_desktop.training.runfolder import RunFolder

    config = RunFolder(page.run_dir).config().to_dict()  # the run's one stored config
    recipe = {k: config[k] for k in ("preset", "lora_r", "lora_alpha", "lora_dropout", "batch_size", "epochs",
                                     "learning_rate", "min_learning_rate", "scheduler", "optimizer", "train_on")}
    assert recipe == {"preset": "muse-3", "lora_r": 64, "lora_alpha": 64, "lora_dropout": 0.05, "batch_size": 3,
                      "epochs": 1, "learning_rate": 1e-4, "min_learning_rate": 1e-6, "scheduler": "cosine",
                      "optimizer": "adamw", "train_on": "assistant"}
    assert sorted(config["target_modules"]) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    win.close()


def test_get_the_muse_dataset_downloads_and_checks_it(qtbot, tmp_path, tiny_model, isolated_home):
    import shutil

    from hub_server import FakeHub
    from test_muse_dataset import muse_records, write_all

    root = tmp_path / "hub"
    (root / "datasets" / "seohyunqkr" / "MUsE").mkdir(parents=True)
    files = write_all(tmp_path / "files", muse_records())
    shutil.copyfile(files["pkl"], root / "datasets" / "seohyunqkr" / "MUsE" / "muse.pkl")
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    page = win.trainer
    page.base_model.setText(str(tiny_model))
    with FakeHub(root) as hub:
        page.settings.hub_endpoint = hub.endpoint
        qtbot.mouseClick(page.get_data_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: "Examples per user type" in page.report.toPlainText(), timeout=60000)
    report = page.report.toPlainText()
    assert page.dataset.text().endswith("muse.pkl")
    assert "5 rows, 5 usable" in report and "4 user types" in report and "tokens" in report
    assert "Examples per user type: Child 2, Elderly 1, Flight Attendant 1, Nurse 1" in report
    win.close()


def test_compare_puts_my_training_next_to_the_published_muse(qtbot, tmp_path):
    from muse_desktop.chat.store import Store

    store = Store()
    for name in ("mine.gguf", "muse.gguf", "other.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    store.add_to_library("My MUsE", "model", str(tmp_path / "mine.gguf"), source="trainer")
    store.add_to_library("MUsE — Phi-3-mini with MUsE built in", "model", str(tmp_path / "muse.gguf"),
                         source="get-muse", info={"adapter_repo": "seohyunqkr/MUsE"})
    store.add_to_library("Something else", "model", str(tmp_path / "other.gguf"), source="trainer")
    (tmp_path / "base.gguf").write_bytes(b"GGUF")  # Get MUsE's base alone is not the published MUsE
    store.add_to_library("Phi-3-mini (without MUsE)", "model", str(tmp_path / "base.gguf"), source="get-muse",
                         info={"adapter_repo": ""})
    win = MainWindow(Settings(user_type_id="child"), store=store)
    qtbot.addWidget(win)
    page = win.compare
    page.refresh_models()
    page.mine_vs_muse_button.click()
    assert sorted(c.name for c in page.chosen()) == ["MUsE — Phi-3-mini with MUsE built in", "Something else"]
    assert "you will not see which is which" in page.status.text()
    win.close()


def test_the_qt_binding_does_not_leak_references_to_none(qtbot):
    """PySide6 6.12.0 returned None from void calls without a reference: the app aborted after a while."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(200):
        label.setText("x")
    assert sys.getrefcount(None) - before > -50


def test_preference_mode_keeps_only_the_best_answer_and_goes_on_from_it(qtbot, tiny_gguf, monkeypatch):
    import random

    from muse_desktop.models.demo_model import Variant

    # The candidates' seeds are drawn at random; the random model then wrote an empty answer in one
    # CI run. Fixed seeds make the four answers the same every run.
    monkeypatch.setattr(random, "SystemRandom", lambda: random.Random(7))
    from muse_desktop.evaluation.preferences import DEFAULT_GRID
    from muse_desktop.chat.store import Store
    from muse_desktop.ui.chat import Bubble

    store = Store()
    win = MainWindow(Settings(user_type_id="child"), store=store)
    qtbot.addWidget(win)
    win.resize(1000, 900)
    win.show()
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_4K])
    chat, panel = win.chat, win.chat.preference_panel
    qtbot.mouseClick(chat.preference_toggle, Qt.LeftButton)
    chat.input.setText("Why do cats purr?")
    chat.send()
    assert panel.isVisible() and not panel.keep.isEnabled()
    qtbot.waitUntil(lambda: chat.worker is None and len(chat._candidates) == 4, timeout=60000)
    texts = [label.text().strip() for label in panel.texts]
    assert len(texts) == 4 and all(texts) and all(b.isEnabled() for b in panel.best_group.buttons())
    panel.choose(best=2, worst=0, reason="short and kind")
    assert panel.keep.isEnabled()
    with qtbot.waitSignal(chat.answer_done):
        qtbot.mouseClick(panel.keep, Qt.LeftButton)
    assert not panel.isVisible()
    conversation = store.conversations()[0]
    messages = store.messages(conversation.id)
    assert [m.role for m in messages] == ["user", "assistant"] and messages[1].content == texts[2]
    record = store.preferences()[0]
    assert (record["best"], record["worst"], record["reason"], record["prompt"]) == (2, 0, "short and kind",
                                                                                      "Why do cats purr?")
    assert [(c["framing"], c["temperature"]) for c in record["candidates"]] == [
        (s.framing, s.temperature) for s in DEFAULT_GRID]
    assert [c["text"] for c in record["candidates"]] == texts
    # The conversation continues from the best answer only.
    qtbot.mouseClick(chat.preference_toggle, Qt.LeftButton)
    chat.input.setText("Do lions purr too?")
    answer_and_wait(qtbot, win, chat.send)
    turns = store.turns(conversation.id)
    assert [t.content for t in turns[:2]] == ["Why do cats purr?", texts[2]] and len(turns) == 4
    assert [b.text().strip() for b in chat.findChildren(Bubble)][:2] == ["Why do cats purr?", texts[2]]
    win.close()
    store.close()


def test_a_blind_comparison_session_from_setup_to_chart(qtbot, tiny_gguf, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from muse_desktop.models.demo_model import Variant

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.resize(1000, 1200)
    win.show()
    win.tabs.setCurrentWidget(win._compare_scroll)
    page = win.compare
    for variant in (Variant.MINI_4K, Variant.GQA):
        monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, v=variant, **k: (str(tiny_gguf[v]), ""))
        page.add_file()
    page.questions.setPlainText("Why is the sky blue?\nWhat do bees make?")
    page.user_types.setText("Child, Elderly")
    page.prepare()
    assert "Who is rating" in page.status.text()  # no rater name yet
    page.rater.setText("Sam")
    qtbot.mouseClick(page.prepare_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: page.worker is None and page.rating.isVisible(), timeout=60000)
    assert page.round_label.text().startswith("Question 1 of 4, for Child")
    names = {b.text() for b in page.findChildren(QAbstractButton)}
    assert not any(Variant.GQA in n or "f32" in n for n in names)  # answers carry no model names
    for _ in range(4):
        page.rate_current([(5, 4, 4), (2, 2, 3)], best=0)
        qtbot.mouseClick(page.next_button, Qt.LeftButton)
    assert not page.rating.isVisible() and page.chart.summary is not None
    summary = page.chart.summary
    assert len(summary.models) == 2 and sum(summary.best_counts.values()) == 4
    assert "± " in page.chart.accessibleDescription() and "Picked as best" in page.best_label.text()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "r.csv"), ""))
    qtbot.mouseClick(page.csv_button, Qt.LeftButton)
    assert (tmp_path / "r.csv").read_text().count("\n") == 9  # header + 8 rated answers
    win.close()


def test_trainer_learns_from_recorded_preferences_with_dpo(qtbot, tiny_model, isolated_home):
    from muse_desktop.chat.store import Store

    store = Store()
    win = MainWindow(Settings(user_type_id="child"), store=store)
    qtbot.addWidget(win)
    win.show()
    page = win.trainer
    page.base_model.setText(str(tiny_model))
    page.dpo_button.click()
    assert "No preferences yet" in page.status.text()
    for i in range(3):
        store.add_preference("Child", [], f"Question {i}?", [{"text": f"Kind answer {i}."}, {"text": "No."}],
                             best=0, worst=1)
    page.advanced_toggle.click()
    page.options["max_steps"].setValue(20)
    page.options["lora_r"].setValue(8)
    page.options["learning_rate"].setText("5e-3")
    page.dpo_button.click()
    qtbot.waitUntil(lambda: page.worker is None, timeout=120000)
    assert page.status.text().startswith("DPO finished: the chosen-minus-rejected log-probability margin went")
    assert len(page.chart.series["train_loss"]) == 20
    win.close()
    store.close()


def test_a_model_with_an_adapter_is_reopened_with_it(qtbot, tiny_gguf, tiny_model, adapters, tmp_path):
    from converters.convert import convert_adapter

    from muse_desktop.models.demo_model import Variant

    adapter = tmp_path / "a.gguf"
    list(convert_adapter(adapters["all"], adapter, tiny_model))
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    wait_for_model(qtbot, win, lambda: win.chat_with(str(tiny_gguf[Variant.MINI_4K]), str(adapter)))
    assert win.chat.model_label.text().endswith("with the add-on a")
    saved = load_settings().settings
    assert (saved.model_path, saved.adapter_path) == (str(tiny_gguf[Variant.MINI_4K]), str(adapter))
    win.close()
    again = MainWindow(load_settings().settings)
    qtbot.addWidget(again)
    again.show_chat()
    qtbot.waitUntil(lambda: again.chat.engine is not None and again.chat.worker is None, timeout=30000)
    assert again.chat.model_label.text().endswith("with the add-on a")
    assert [a.path for a in again.chat.engine.adapters] == [str(adapter)]
    again.close()


def test_longer_memory_is_asked_for_explained_and_reopens_the_model(qtbot, tiny_gguf, monkeypatch):
    """A LongRoPE model opens at its original context; 'Longer memory…' says the cost, then reopens it."""
    from PySide6.QtWidgets import QMessageBox

    from muse_desktop.models.demo_model import Variant

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    load_model_and_wait(qtbot, win, tiny_gguf[Variant.MINI_128K])
    assert win.chat.engine.llm.n_ctx() <= 256  # the tiny model's original context
    assert "keeps about 190 words of a conversation in mind" in win.chat.status.text()
    asked = []

    def refuse(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.No

    monkeypatch.setattr(QMessageBox, "question", refuse)
    win.memory_action.trigger()
    assert asked and "less exact" in asked[0]
    assert not win.memory_action.isChecked() and not load_settings().settings.long_context
    monkeypatch.setattr(QMessageBox, "question", lambda *args: QMessageBox.Yes)
    wait_for_model(qtbot, win, win.memory_action.trigger)
    assert win.memory_action.isChecked() and load_settings().settings.long_context
    assert win.chat.engine.llm.n_ctx() == 8192 and "Longer memory is on" in win.chat.status.text()
    wait_for_model(qtbot, win, win.memory_action.trigger)  # off again: no question asked
    assert win.chat.engine.llm.n_ctx() <= 256 and not load_settings().settings.long_context
    win.close()
