"""One failed, stopped or empty answer never leaves a conversation the prompt contract refuses."""

from __future__ import annotations

import pytest

from helpers import wait_for_model, window_with_model

from muse_desktop.models.demo_model import Variant
from muse_desktop.base.prompting import Turn, build_pieces
from muse_desktop.household.settings import Settings
from muse_desktop.chat.store import Store


@pytest.fixture
def chat_window(qtbot, tiny_gguf):
    store = Store()
    win = window_with_model(qtbot, Settings(user_type_id="teenager", context_length=256), tiny_gguf[Variant.MINI_4K],
                            store=store)
    yield win
    win.close()
    store.close()


def ask(qtbot, win, question: str, stop: bool = False) -> None:
    win.chat.input.setText(question)
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000) if not stop else _nothing():
        win.chat.send()
        if stop:
            win.chat.stop()
    qtbot.waitUntil(lambda: win.chat.worker is None, timeout=30000)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def assert_valid(store: Store, conversation_id: int) -> list[Turn]:
    turns = store.turns(conversation_id)
    build_pieces("Teenager", turns, add_generation_prompt=False)  # raises if the contract refuses them
    return turns


def test_a_failed_answer_leaves_the_question_marked_and_the_next_one_is_answered(qtbot, chat_window):
    from muse_desktop.ui.chat import NO_ANSWER, Bubble

    win, store = chat_window, chat_window.store
    too_long = "Tell me everything about rivers and mountains and seas. " * 60  # far past 256 tokens
    win.chat.input.setText(too_long)
    with qtbot.waitSignal(win.chat.problem, timeout=30000) as failed:
        win.chat.send()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert "too long" in failed.args[0]
    conversation = store.conversations()[0].id
    saved = store.messages(conversation)
    assert saved[-1].content == too_long.strip() and saved[-1].settings.get("unanswered")  # kept, marked
    assert [b.text() for b in win.chat.findChildren(Bubble) if b.role == "note"] == [NO_ANSWER]
    ask(qtbot, win, "Why is the sky blue?")
    saved = store.messages(conversation)
    assert [m.role for m in saved] == ["user", "user", "assistant"] and saved[-1].content.strip()
    assert [t.content for t in assert_valid(store, conversation)] == ["Why is the sky blue?", saved[-1].content]
    assert "must alternate" not in win.chat.status.text()


def test_an_answer_stopped_before_any_text_keeps_the_conversation_valid(qtbot, chat_window):
    win, store = chat_window, chat_window.store
    ask(qtbot, win, "Tell me a long story", stop=True)  # stopped before the prompt was even evaluated
    conversation = store.conversations()[0].id
    saved = store.messages(conversation)
    assert [m.role for m in saved] == ["user"] and saved[0].settings.get("unanswered")
    ask(qtbot, win, "And a short one?")
    assert [m.role for m in store.messages(conversation)] == ["user", "user", "assistant"]
    assert_valid(store, conversation)
    # "Try again" on an unanswered question asks it again, and the conversation stays valid.
    ask(qtbot, win, "One more?", stop=True)
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.regenerate()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    saved = store.messages(conversation)
    assert saved[-2].content == "One more?" and not saved[-2].settings.get("unanswered")
    assert saved[-1].role == "assistant" and saved[-1].content.strip()
    assert len(assert_valid(store, conversation)) == 4


def test_a_conversation_broken_by_an_older_version_is_repaired_when_opened(qtbot, chat_window):
    from muse_desktop.ui.chat import NO_ANSWER, Bubble

    win, store = chat_window, chat_window.store
    broken = store.create_conversation("Teenager", "Broken").id
    store.add_message(broken, "user", "First question that never got an answer")
    store.add_message(broken, "user", "Second question")
    store.add_message(broken, "assistant", "An answer.")
    store.add_message(broken, "user", "A question a crash cut off")
    win.chat.open_conversation(broken)
    qtbot.wait(50)  # new bubbles are shown from the event loop
    notes = [b for b in win.chat.findChildren(Bubble) if b.role == "note" and not b.isHidden()]
    assert [b.text() for b in notes] == [NO_ANSWER, NO_ANSWER]
    ask(qtbot, win, "Are you there?")
    saved = store.messages(broken)
    assert saved[-1].role == "assistant" and saved[-1].content.strip()
    turns = assert_valid(store, broken)
    assert [t.content for t in turns[:-1]] == ["Second question", "An answer.", "Are you there?"]


def test_stopping_the_four_answers_keeps_the_conversation_valid(qtbot, chat_window):
    win, store = chat_window, chat_window.store
    win.chat.preference_toggle.setChecked(True)
    win.chat.input.setText("Which is better, tea or coffee?")
    win.chat.send()
    qtbot.waitUntil(lambda: win.chat.preference_panel.isVisible(), timeout=10000)
    win.chat.stop()
    qtbot.waitUntil(lambda: win.chat.worker is None and not win.chat._choosing, timeout=30000)
    assert not win.chat.preference_panel.isVisible()
    win.chat.preference_toggle.setChecked(False)
    ask(qtbot, win, "What is tea made of?")
    conversation = store.conversations()[0].id
    saved = store.messages(conversation)
    assert saved[-1].role == "assistant" and saved[-1].content.strip()
    assert [t.content for t in assert_valid(store, conversation)][0] == "What is tea made of?"


def test_deleting_a_conversation_deletes_its_preferences_after_asking(qtbot, chat_window, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    win, store = chat_window, chat_window.store
    keep = store.create_conversation("Teenager", "Keep").id
    gone = store.create_conversation("Teenager", "Gone").id
    candidates = [{"text": "A"}, {"text": "B"}]
    store.add_preference("Teenager", [], "Tea?", candidates, 0, 1, "", keep)
    store.add_preference("Teenager", [], "Private question", candidates, 1, 0, "", gone)
    asked = []

    def question(_parent, _title, text, *_args):
        asked.append(text)
        return QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "question", question)
    win.chat.open_conversation(gone)
    win.chat.delete_conversation()
    assert asked and "1 choice between answers made in it will be deleted too" in asked[0]
    assert [p["prompt"] for p in store.preferences()] == ["Tea?"]


def test_compare_never_stores_an_answer_cut_off_by_stop(tiny_gguf):
    from muse_desktop.chat.engine import EngineSettings
    from muse_desktop.evaluation.compare import Contender, generate_answers, new_session
    from muse_desktop.base.events import Cancelled, Progress
    from test_chat_safety import CancelledAfter

    class StopDuringTheLastAnswer(CancelledAfter):
        armed = False

        @property
        def cancelled(self) -> bool:
            return CancelledAfter.cancelled.fget(self) if self.armed else self._event.is_set()

    store = Store()
    model = str(tiny_gguf[Variant.MINI_4K])
    session = new_session(store, "Sam", [Contender("a", model), Contender("b", model)])
    token = StopDuringTheLastAnswer(1)
    with pytest.raises(Cancelled):
        for event in generate_answers(store.path, session, ["Why is the sky blue?"], ["Child"],
                                      EngineSettings(threads=2, context_length=512), cancel=token):
            if isinstance(event, Progress):
                token.armed = True  # the first model has answered: Stop comes while the second answers
    assert store.db.execute("SELECT COUNT(*) FROM comparison_answers").fetchone()[0] == 0
    store.close()


def test_while_four_answers_wait_for_a_choice_nothing_else_can_ask(qtbot, chat_window, tmp_path):
    """Found in review: Try again / Send / another conversation during the choice corrupted the record."""
    win, store = chat_window, chat_window.store
    chat = win.chat
    chat.preference_toggle.setChecked(True)
    chat.input.setText("Which is better, tea or coffee?")
    chat.send()
    qtbot.waitUntil(lambda: chat.worker is None and len(chat._candidates) == 4, timeout=60000)
    conversation = store.conversations()[0].id
    before = [(m.role, m.content) for m in store.messages(conversation)]
    assert chat.busy and not chat.regenerate_button.isEnabled() and not chat.send_button.isEnabled()
    assert not chat.new_button.isEnabled() and chat.stop_button.isEnabled()
    chat.preference_toggle.setChecked(False)
    chat.regenerate()  # what the review did: a plain Try again while the four wait
    chat.input.setText("Another question")
    chat.send()
    chat.new_conversation()
    assert chat.worker is None and [(m.role, m.content) for m in store.messages(conversation)] == before
    chat.preference_panel.choose(best=1, worst=0)
    chat.preference_panel.keep.click()
    record = store.preferences()[0]
    assert record["prompt"] == "Which is better, tea or coffee?"
    assert [m.role for m in store.messages(conversation)] == ["user", "assistant"]
    assert chat.regenerate_button.isEnabled() and not chat.stop_button.isEnabled()
    assert_valid(store, conversation)


def test_stop_leaves_a_round_that_waits_for_a_choice(qtbot, chat_window):
    win, store = chat_window, chat_window.store
    chat = win.chat
    chat.preference_toggle.setChecked(True)
    chat.input.setText("Which is better, tea or coffee?")
    chat.send()
    qtbot.waitUntil(lambda: chat.worker is None and len(chat._candidates) == 4, timeout=60000)
    chat.stop()
    assert not chat.busy and not chat.preference_panel.isVisible() and chat.send_button.isEnabled()
    assert not store.preferences()
    conversation = store.conversations()[0].id
    assert store.messages(conversation)[-1].settings.get("unanswered")  # kept, marked as without an answer
    chat.preference_toggle.setChecked(False)
    ask(qtbot, win, "What is tea made of?")
    assert [t.content for t in assert_valid(store, conversation)][0] == "What is tea made of?"


def test_a_model_reopened_while_busy_keeps_its_add_on(qtbot, chat_window, tiny_model, tmp_path):
    """Found in review: a reopen requested during an answer dropped the add-on (and saved that)."""
    from converters.convert import convert_adapter
    from helpers import make_peft_adapter

    from muse_desktop.household.settings import load_settings

    win = chat_window
    lora = tmp_path / "addon.gguf"
    for _ in convert_adapter(make_peft_adapter(tiny_model, tmp_path / "adapter", b_scale=0.3), lora, tiny_model):
        pass
    model = win.settings.model_path
    wait_for_model(qtbot, win, lambda: win.chat.load_model(model, [str(lora)]))
    win.chat.input.setText("Tell me a long story about tea.")
    win.chat.send()
    assert win.chat.busy
    wait_for_model(qtbot, win, win.chat.reopen_model, timeout=60000)  # e.g. "Longer memory…" while it writes
    assert [spec.path for spec in win.chat.engine.adapters] == [str(lora)]
    assert load_settings().settings.adapter_path == str(lora)
