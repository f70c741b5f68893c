"""Spoken questions in the kiosk: the same scope check as typed ones, with a real guard and a real model."""

from __future__ import annotations

import pytest

from muse_desktop.base.events import Done
from test_kiosk_routes import OFF_TOPIC, ON_TOPIC, guard_json, kiosk  # noqa: F401  (fixtures)

pytest.importorskip("pywhispercpp.model")


def hear(qtbot, win, words: str) -> None:
    """What the recognizer hands the window when it has written the words down."""
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.speech._heard(Done("heard", data={"text": words}))
    qtbot.waitUntil(lambda: win.chat.worker is None)


def test_a_spoken_off_topic_question_is_refused_without_asking_the_model(qtbot, kiosk):  # noqa: F811
    win, store, asked = kiosk
    win.chat.settings.speech_sends = True  # hands-free: what was heard is sent at once
    hear(qtbot, win, OFF_TOPIC)
    assert asked == []
    saved = store.messages(store.conversations()[0].id)
    assert [m.role for m in saved] == ["user", "assistant"] and saved[0].content == OFF_TOPIC
    assert saved[-1].content.startswith("I'm sorry, I can only help with questions about ancient Egypt")
    hear(qtbot, win, ON_TOPIC)
    assert asked == [ON_TOPIC]


def test_without_sending_at_once_spoken_words_wait_in_the_box(qtbot, kiosk):  # noqa: F811
    win, _store, asked = kiosk
    win.chat.settings.speech_sends = False
    win.chat.speech._heard(Done("heard", data={"text": OFF_TOPIC}))
    assert win.chat.input.text() == OFF_TOPIC and asked == []
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.send()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert asked == []
