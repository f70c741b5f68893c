"""Read answers aloud with the speech engine the system already has.

Qt's text-to-speech module is not part of the small Qt install the chat app
ships, so the system's own engines are used: speech-dispatcher (``spd-say``) or
eSpeak NG on Linux, ``say`` on macOS, the built-in synthesizer through PowerShell
on Windows. Text goes through standard input or as one argument, never a shell.
When no engine is installed, :attr:`Speaker.unavailable_reason` points to the natural voice's
one-click download (and names the system's own engines).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Backend:
    name: str
    executable: str

    def speak_command(self, rate_wpm: int) -> tuple[list[str], bool]:
        """(argv, text on stdin?) to speak at about ``rate_wpm`` words per minute."""
        if self.name == "spd-say":
            rate = max(-100, min(100, int((rate_wpm - 175) / 2)))
            return [self.executable, "-w", "-r", str(rate), "-e"], True
        if self.name in ("espeak-ng", "espeak"):
            return [self.executable, "-s", str(rate_wpm), "--stdin"], True
        if self.name == "say":
            return [self.executable, "-r", str(rate_wpm), "-f", "-"], True
        script = ("Add-Type -AssemblyName System.Speech; $s = New-Object System.Speech.Synthesis.SpeechSynthesizer; "
                  "$s.Speak([Console]::In.ReadToEnd())")
        return [self.executable, "-NoProfile", "-Command", script], True

    def file_command(self, path: Path, rate_wpm: int) -> list[str] | None:
        """argv that writes the speech to a WAV file instead (where the engine can)."""
        if self.name in ("espeak-ng", "espeak"):
            return [self.executable, "-s", str(rate_wpm), "-w", str(path), "--stdin"]
        return None


_CANDIDATES = {
    "linux": ("spd-say", "espeak-ng", "espeak"),
    "darwin": ("say",),
    "win32": ("powershell",),
}


def find_backend(search_path: str | None = None) -> Backend | None:
    """The first speech engine found on ``search_path`` (default: PATH)."""
    for name in _CANDIDATES.get(sys.platform, ("espeak-ng", "espeak")):
        found = shutil.which(name, path=search_path)
        if found:
            return Backend(name, found)
    return None


class Speaker:
    """Speaks one text at a time; a new text or :meth:`stop` ends the previous one."""

    def __init__(self, backend: Backend | None = None, rate_wpm: int = 150):
        self.backend = backend
        self.rate_wpm = rate_wpm
        self._process: subprocess.Popen | None = None

    @classmethod
    def from_system(cls, rate_wpm: int = 150) -> "Speaker":
        return cls(find_backend(), rate_wpm)

    @property
    def available(self) -> bool:
        return self.backend is not None

    @property
    def unavailable_reason(self) -> str:
        hint = {
            "linux": "a caregiver can add one from the computer's software centre: search for espeak-ng",
            "darwin": "the 'say' command is missing",
            "win32": "Windows PowerShell is missing",
        }.get(sys.platform, "a caregiver can add one: the espeak-ng speech engine")
        # The first way needs no terminal: the natural voice comes from the Speech menu in one click.
        return ("Reading aloud needs a speech engine on this computer, and none was found. To get one, "
                f"choose “Get the natural voice…” in the Speech menu (or {hint}).")

    @property
    def speaking(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def speak(self, text: str) -> None:
        if self.backend is None:
            raise RuntimeError(self.unavailable_reason)
        self.stop()
        argv, use_stdin = self.backend.speak_command(self.rate_wpm)
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE if use_stdin else None,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if use_stdin:
            try:
                self._process.stdin.write(text.encode("utf-8"))
                self._process.stdin.close()
            except BrokenPipeError:
                pass

    def to_file(self, text: str, path: Path) -> bool:
        """Write the speech to ``path`` (WAV) where the engine can; returns whether it did."""
        if self.backend is None:
            return False
        argv = self.backend.file_command(path, self.rate_wpm)
        if argv is None:
            return False
        subprocess.run(argv, input=text.encode("utf-8"), check=True, capture_output=True, timeout=60)
        return path.exists() and path.stat().st_size > 44

    def stop(self) -> None:
        if self.speaking:
            self._process.terminate()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._process = None
