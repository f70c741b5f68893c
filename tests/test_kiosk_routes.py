"""Kiosk mode: every route to the model passes one scope check, and without a usable guard everything is refused."""

from __future__ import annotations

import pytest

from muse_desktop.models.demo_model import Variant
from helpers import window_with_model

from muse_desktop.household.scope import guard_path
from muse_desktop.household.settings import Settings
from muse_desktop.chat.store import Store

OFF_TOPIC = "How do I bake chocolate chip cookies?"
ON_TOPIC = "Where is the tomb of Khufu?"


@pytest.fixture(scope="module")
def guard_json(tmp_path_factory, museum_guard):
    path = tmp_path_factory.mktemp("guard") / "guard.json"
    museum_guard.guard.save(path)
    return path.read_text()


@pytest.fixture
def kiosk(qtbot, tiny_gguf, guard_json):
    """A kiosk window whose model records every prompt it is really asked (and still answers it)."""
    guard_path().parent.mkdir(parents=True, exist_ok=True)
    guard_path().write_text(guard_json)
    store = Store()
    win = window_with_model(qtbot, Settings(user_type_id="child", kiosk_mode=True), tiny_gguf[Variant.MINI_4K],
                            store=store, show_chat=False)
    asked: list[str] = []
    real = win.chat.engine.generate

    def recording(user_type, turns, *args, **kwargs):
        asked.append(turns[-1].content)
        return real(user_type, turns, *args, **kwargs)

    win.chat.engine.generate = recording
    yield win, store, asked
    win.close()
    store.close()


def send(qtbot, win, question: str) -> None:
    win.chat.input.setText(question)
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.send()
    qtbot.waitUntil(lambda: win.chat.worker is None)


def test_try_again_on_a_refused_question_does_not_reach_the_model(qtbot, kiosk):
    win, store, asked = kiosk
    send(qtbot, win, OFF_TOPIC)
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.regenerate()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert asked == []
    saved = store.messages(store.conversations()[0].id)
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[-1].content.startswith("I'm sorry, I can only help with questions about ancient Egypt")
    send(qtbot, win, ON_TOPIC)
    assert asked == [ON_TOPIC]  # the recording model is really asked when the question fits


def test_choose_from_4_passes_the_scope_check(qtbot, kiosk):
    win, store, asked = kiosk
    win.chat.preference_toggle.setChecked(True)
    send(qtbot, win, OFF_TOPIC)
    assert asked == [] and not win.chat.preference_panel.isVisible()


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong shapes"])
def test_a_missing_or_damaged_guard_refuses_everything_and_tells_the_caregiver(qtbot, kiosk, damage):
    win, store, asked = kiosk
    if damage == "missing":
        guard_path().unlink()
    elif damage == "garbage":
        guard_path().write_text("{ not json")
    else:
        import json

        data = json.loads(guard_path().read_text())
        data["coef"] = data["coef"][:3]
        guard_path().write_text(json.dumps(data))
    with qtbot.waitSignal(win.chat.problem, timeout=5000) as told:
        send(qtbot, win, ON_TOPIC)  # even an in-scope question: nothing can check it
    assert asked == []
    assert "Kiosk mode is on" in told.args[0] and "guard" in told.args[0]
    assert win.chat.status.text() == told.args[0]
    saved = store.messages(store.conversations()[0].id)
    assert saved[-1].role == "assistant" and "ask the person who looks after me" in saved[-1].content


def test_compare_in_kiosk_mode_asks_no_model_an_off_topic_question(qtbot, kiosk, tiny_gguf):
    win, store, _asked = kiosk
    page = win.compare
    page._add("tiny", str(tiny_gguf[Variant.MINI_4K]), checked=True)
    page._add("tiny again", str(tiny_gguf[Variant.MINI_4K]), checked=True)
    page.rater.setText("Sam")
    page.questions.setPlainText(f"{ON_TOPIC}\n{OFF_TOPIC}")
    page.user_types.setText("Child")
    page.prepare()
    assert page.worker is None and "outside what this kiosk is for" in page.status.text()
    assert store.db.execute("SELECT COUNT(*) FROM comparison_answers").fetchone()[0] == 0


def test_the_command_line_chat_passes_the_same_scope_check(tiny_gguf, guard_json, capsys):
    from muse_desktop.cli import main
    from muse_desktop.household.settings import save_settings

    guard_path().parent.mkdir(parents=True, exist_ok=True)
    guard_path().write_text(guard_json)
    save_settings(Settings(kiosk_mode=True))
    model = str(tiny_gguf[Variant.MINI_4K])
    assert main(["chat", "--model", model, "--max-tokens", "4", OFF_TOPIC]) == 0
    assert capsys.readouterr().out.startswith("I'm sorry, I can only help with questions about ancient Egypt")
    guard_path().unlink()
    assert main(["chat", "--model", model, "--max-tokens", "4", ON_TOPIC]) == 0
    captured = capsys.readouterr()
    assert "ask the person who looks after me" in captured.out and "Kiosk mode is on" in captured.err
