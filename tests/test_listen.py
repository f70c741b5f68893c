"""Speech input: a WAV file stands in for the microphone, a tiny whisper.cpp model built here listens."""

from __future__ import annotations

import threading
import wave

import numpy as np
import pytest
from muse_desktop.models.whisper_demo import write_model

from muse_desktop.base.events import CancelToken, Cancelled, Done, Log, Metric
from muse_desktop.speech.listen import (LISTENING, NO_MICROPHONE, SAMPLE_RATE, WRITING, MicrophoneSource, Recognizer,
                                 WavFileSource, level, listen, microphone_problem, record)

pytest.importorskip("pywhispercpp.model")


def write_wav(path, seconds_loud=1.0, seconds_quiet=2.0, seed=0):
    """A 'voice' (loud noise shaped like speech bursts) followed by quiet."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SAMPLE_RATE * seconds_loud)) / SAMPLE_RATE
    loud = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
    quiet = 0.0005 * rng.standard_normal(int(SAMPLE_RATE * seconds_quiet))
    data = (np.concatenate([loud, quiet]) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(data.tobytes())
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("whisper") / "ggml-tiny-random.bin", word=" hello")


def test_the_level_meter_tells_speech_from_quiet():
    assert level(np.zeros(1600, np.float32)) == 0.0
    assert level(0.3 * np.ones(1600, np.float32)) > 0.8
    assert level(0.001 * np.ones(1600, np.float32)) < 0.2


def test_recording_stops_by_itself_after_a_pause(tmp_path):
    wav = write_wav(tmp_path / "said.wav", seconds_loud=1.0, seconds_quiet=3.0)
    events = list(record(WavFileSource(wav), threading.Event(), pause_s=1.0))
    assert isinstance(events[0], Log) and events[0].message == LISTENING
    levels = [e.value for e in events if isinstance(e, Metric)]
    assert max(levels) > 0.6 and min(levels) < 0.2
    done = events[-1]
    assert done.data["heard"] is True
    seconds = len(done.data["audio"]) / SAMPLE_RATE
    assert 1.9 < seconds < 2.6  # 1 s of speech, then 1 s of pause ended it, not the whole file


def test_pressing_again_finishes_at_once(tmp_path):
    wav = write_wav(tmp_path / "said.wav", seconds_loud=5.0)
    finish = threading.Event()
    seen = []
    for event in record(WavFileSource(wav), finish):
        seen.append(event)
        if len(seen) == 6:
            finish.set()
    assert len(seen[-1].data["audio"]) == 5 * int(SAMPLE_RATE * 0.1)


def test_audio_goes_through_the_engine_to_words(tmp_path, tiny_model):
    wav = write_wav(tmp_path / "said.wav")
    recognizer = Recognizer(tiny_model, threads=1)
    events = list(listen(WavFileSource(wav), lambda: recognizer, threading.Event(), pause_s=1.0))
    messages = [e.message for e in events if isinstance(e, Log)]
    assert messages == [LISTENING, WRITING]
    text = events[-1].data["text"]
    assert isinstance(events[-1], Done) and text.split()[0] == "hello", text


def test_writing_down_can_be_cancelled_midway(tiny_model):
    recognizer = Recognizer(tiny_model, threads=1)
    cancel = CancelToken()
    audio = np.zeros(SAMPLE_RATE * 2, np.float32)
    calls = []

    def abort_soon():  # whisper.cpp asks this while it works: the cancel reaches into the engine
        calls.append(1)
        return True

    cancel.cancel()
    with pytest.raises(Cancelled):
        recognizer.transcribe(audio, cancel)
    fresh = CancelToken()
    recognizer._model.transcribe(audio, abort_callback=abort_soon, max_tokens=2)
    assert calls  # the engine really consulted the abort callback
    timer = threading.Timer(0.0, fresh.cancel)
    timer.start()
    timer.join()
    with pytest.raises(Cancelled):
        recognizer.transcribe(audio, fresh)


def test_no_microphone_is_said_plainly(monkeypatch):
    import sounddevice

    def no_devices(*_args, **_kwargs):
        raise sounddevice.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sounddevice, "query_devices", no_devices)
    assert microphone_problem() == NO_MICROPHONE
    with pytest.raises(RuntimeError, match="No microphone was found"):
        MicrophoneSource().__enter__()
    assert "type your question" in NO_MICROPHONE


def test_the_listening_model_is_fetched_once_checked_and_its_size_known_first(tmp_path, tiny_model):
    import shutil

    from hub_server import FakeHub

    from muse_desktop.speech.listen import MODEL_REPO, download_model, download_size, find_model

    root = tmp_path / "hub"
    (root / MODEL_REPO).mkdir(parents=True)
    shutil.copy(tiny_model, root / MODEL_REPO / "ggml-base.en.bin")
    dest = tmp_path / "speech"
    with FakeHub(root) as hub:
        assert download_size("ggml-base.en.bin", hub.endpoint) == tiny_model.stat().st_size
        events = list(download_model("ggml-base.en.bin", dest, hub.endpoint))
        assert isinstance(events[-1], Done)
        fetched = len([p for p, _ in hub.requests if "/resolve/" in p])
        list(download_model("ggml-base.en.bin", dest, hub.endpoint))  # a second time: nothing is fetched
        assert len([p for p, _ in hub.requests if "/resolve/" in p]) == fetched
    model = find_model(dest, "ggml-base.en.bin")
    assert model is not None and model.read_bytes() == tiny_model.read_bytes()
    assert Recognizer(model, threads=1).transcribe(np.zeros(SAMPLE_RATE, np.float32), max_tokens=2)
