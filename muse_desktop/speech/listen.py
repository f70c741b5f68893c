"""Speech input: record from the microphone until the person stops, then write the words down.

Recognition is whisper.cpp (through ``pywhispercpp``): a few MB of engine, MIT
licensed, wheels for Windows, macOS and Linux, models in one file each (see
BENCHMARKS.md for why it was chosen over faster-whisper). The models are fetched
once from the hub repository ``ggerganov/whisper.cpp`` with the app's checked,
resumable downloader.

Audio comes from a *source*: the microphone (``sounddevice``/PortAudio) or a WAV
file played back as if it were one, so the whole path can be checked on a machine
without a sound card. Nothing here imports Qt.
"""

from __future__ import annotations

import queue
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muse_desktop.base.events import CancelToken, Cancelled, Done, Event, Log, Metric

SAMPLE_RATE = 16000  # what Whisper models hear
BLOCK_S = 0.1
MODEL_REPO = "ggerganov/whisper.cpp"


@dataclass(frozen=True)
class ListenModel:
    file: str
    label: str
    size_mb: int  # shown before the download starts (the hub listing gives the exact size)


# English-only models understand English better at the same size; "base" also hears other languages.
# The same list for every user type: whether one of them copes better with children's or older
# people's voices has not been measured (no such recordings here), so nothing picks by user type.
MODELS = (
    ListenModel("ggml-base.en.bin", "English (recommended)", 148),
    ListenModel("ggml-base.bin", "Many languages", 148),
    ListenModel("ggml-small.en.bin", "English, more accurate, slower", 488),
)
DEFAULT_MODEL = MODELS[0].file

LISTENING = "Listening…"
WRITING = "Writing down what you said…"
NO_MICROPHONE = ("No microphone was found. Plug one in (or switch it on), then press “Speak” again. "
                 "You can always type your question instead.")


def engine_missing_reason() -> str | None:
    import importlib.util

    # Found, not imported: importing it would slow the window's start.
    if importlib.util.find_spec("pywhispercpp") is None:
        return "Speaking your question is not installed with this copy of MUsE."
    return None


def microphone_problem(device=None) -> str | None:
    """None when a microphone can be opened, otherwise a plain explanation."""
    try:
        import sounddevice
    except (ImportError, OSError):  # OSError: the PortAudio library itself is missing
        return NO_MICROPHONE
    try:
        info = sounddevice.query_devices(device, kind="input")
    except Exception:
        return NO_MICROPHONE
    if not info or info.get("max_input_channels", 0) < 1:
        return NO_MICROPHONE
    return None


def find_model(folder: Path, name: str = DEFAULT_MODEL) -> Path | None:
    path = Path(folder) / name
    return path if path.is_file() and path.stat().st_size > 0 else None


class MicrophoneSource:
    """Blocks of mono float32 audio from the microphone, as they arrive."""

    def __init__(self, device=None):
        self.device = device
        self._queue: queue.Queue = queue.Queue()
        self._stream = None

    def __enter__(self):
        problem = microphone_problem(self.device)
        if problem:
            raise RuntimeError(problem)
        import sounddevice

        def callback(indata, _frames, _time, _status):
            self._queue.put(indata[:, 0].copy())

        self._stream = sounddevice.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                               blocksize=int(SAMPLE_RATE * BLOCK_S), device=self.device,
                                               callback=callback)
        self._stream.start()
        return self

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __exit__(self, *exc):
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None


class WavFileSource:
    """A WAV file played as if it were a microphone (16 kHz mono 16-bit), in real time or faster."""

    def __init__(self, path: Path, realtime: bool = False):
        self.path = Path(path)
        self.realtime = realtime
        self._blocks: Iterator[np.ndarray] | None = None

    def __enter__(self):
        with wave.open(str(self.path)) as audio:
            if audio.getframerate() != SAMPLE_RATE or audio.getnchannels() != 1 or audio.getsampwidth() != 2:
                raise RuntimeError("The recording must be 16 kHz, mono, 16-bit.")
            data = np.frombuffer(audio.readframes(audio.getnframes()), "<i2").astype(np.float32) / 32768
        step = int(SAMPLE_RATE * BLOCK_S)
        self._blocks = iter([data[i:i + step] for i in range(0, len(data), step)])
        return self

    def read(self, timeout: float = 0.5) -> np.ndarray | None:
        import time

        block = next(self._blocks, None)
        if block is None:
            time.sleep(min(timeout, 0.05))  # the "microphone" has gone quiet
            return np.zeros(int(SAMPLE_RATE * BLOCK_S), np.float32)
        if self.realtime:
            time.sleep(BLOCK_S)
        return block

    def __exit__(self, *exc):
        self._blocks = None


def level(block: np.ndarray) -> float:
    """How loud a block is, 0..1, for the meter (a log scale: speech shows well above 0.3)."""
    rms = float(np.sqrt(np.mean(np.square(block)))) if len(block) else 0.0
    return min(max((20 * np.log10(max(rms, 1e-5)) + 60) / 60, 0.0), 1.0)


def record(source, finish: threading.Event, cancel: CancelToken | None = None, pause_s: float = 1.5,
           max_s: float = 60.0, speech_level: float = 0.35) -> Iterator[Event]:
    """Record until ``finish`` is set, the person pauses after speaking, or ``max_s``.

    Yields ``Metric("level", 0..1)`` per block; Done carries the audio (16 kHz float32).
    """
    blocks: list[np.ndarray] = []
    heard, quiet = False, 0.0
    with source:
        yield Log(LISTENING)
        while not finish.is_set():
            if cancel is not None and cancel.cancelled:
                raise Cancelled("cancelled")
            block = source.read()
            if block is None:
                continue
            blocks.append(block)
            loudness = level(block)
            yield Metric("level", loudness)
            if loudness >= speech_level:
                heard, quiet = True, 0.0
            else:
                quiet += len(block) / SAMPLE_RATE
            if (heard and quiet >= pause_s) or (not heard and quiet >= 10 * pause_s):
                break  # finished speaking, or nobody spoke at all
            if sum(len(b) for b in blocks) >= max_s * SAMPLE_RATE:
                break
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    yield Done("recorded", data={"audio": audio, "heard": heard})


class Recognizer:
    """A loaded whisper.cpp model."""

    def __init__(self, model_path: Path, threads: int = 0, language: str = "en"):
        from pywhispercpp.model import Model

        import os

        threads = threads or max(1, min(4, (os.cpu_count() or 2)))
        self.language = language
        self._model = Model(str(model_path), redirect_whispercpp_logs_to=None, n_threads=threads,
                            print_progress=False, print_realtime=False, print_timestamps=False)

    def transcribe(self, audio: np.ndarray, cancel: CancelToken | None = None, max_tokens: int = 0,
                   **options) -> str:
        """The words in ``audio``; raises Cancelled when ``cancel`` was set (even mid-way)."""
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        if len(audio) < SAMPLE_RATE // 2:  # whisper.cpp wants at least a second; pad short ones with quiet
            audio = np.concatenate([audio, np.zeros(SAMPLE_RATE - len(audio), np.float32)])
        segments = self._model.transcribe(
            audio.astype(np.float32), language=self.language, no_timestamps=True, single_segment=True,
            max_tokens=max_tokens, abort_callback=(lambda: cancel.cancelled) if cancel is not None else None,
            **options)
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")
        return " ".join(s.text.strip() for s in segments).strip()


def listen(source, recognizer, finish: threading.Event, cancel: CancelToken | None = None,
           **record_options) -> Iterator[Event]:
    """Record, then write down: yields the levels, Log(WRITING), and Done with ``text``."""
    audio = None
    for event in record(source, finish, cancel, **record_options):
        if isinstance(event, Done):
            audio = event.data["audio"]
        else:
            yield event
    yield Log(WRITING)
    if callable(recognizer) and not isinstance(recognizer, Recognizer):
        recognizer = recognizer()  # loaded only now: the microphone is already listening meanwhile
    text = recognizer.transcribe(audio, cancel)
    yield Done("heard" if text else "nothing heard", data={"text": text})


def download_size(name: str, endpoint: str | None = None) -> int:
    """The exact size of one recognition model on the hub, to show before downloading."""
    from muse_desktop.models.download import list_repo

    listing = list_repo(MODEL_REPO, endpoint=endpoint)
    files = listing.select([name])
    if not files:
        from muse_desktop.models.download import DownloadError

        raise DownloadError(f"'{MODEL_REPO}' has no file {name}.")
    return files[0].size


def download_model(name: str, folder: Path, endpoint: str | None = None,
                   cancel: CancelToken | None = None) -> Iterator[Event]:
    """Fetch one recognition model into ``folder`` (checked and resumable)."""
    from muse_desktop.models.download import download_repo

    yield from download_repo(MODEL_REPO, folder, [name], endpoint=endpoint, cancel=cancel)


def models_folder() -> Path:
    from muse_desktop.base.paths import user_dirs

    return user_dirs().models / "speech"
