"""Read-aloud: a real engine when the system has one, a clear message when it has none."""

from __future__ import annotations

import time
import wave

import pytest

from muse_desktop.speech import Speaker, find_backend


def test_without_an_engine_the_reason_is_given(tmp_path):
    speaker = Speaker(find_backend(search_path=str(tmp_path)))  # an empty folder: no engine
    assert not speaker.available
    assert "needs a speech engine" in speaker.unavailable_reason
    with pytest.raises(RuntimeError, match="needs a speech engine"):
        speaker.speak("Hello")
    assert speaker.to_file("Hello", tmp_path / "x.wav") is False


@pytest.mark.skipif(find_backend() is None, reason="no speech engine installed on this machine")
def test_speech_is_really_produced_and_can_be_stopped(tmp_path):
    speaker = Speaker.from_system(rate_wpm=160)
    out = tmp_path / "answer.wav"
    if speaker.to_file("A balanced diet gives your body what it needs.", out):
        with wave.open(str(out)) as audio:
            seconds = audio.getnframes() / audio.getframerate()
        assert 1.0 < seconds < 10.0
    speaker.speak("This is a long sentence that keeps the speech engine busy for several seconds. " * 5)
    assert speaker.speaking
    time.sleep(0.2)
    speaker.stop()
    assert not speaker.speaking
