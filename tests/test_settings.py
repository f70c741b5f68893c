"""Settings: atomic saves, defaults, and corrupt files kept aside with a clear message."""

from __future__ import annotations

import json
import os

import pytest

from muse_desktop.base.fileio import TEMP_MARK, atomic_path, atomic_write_text
from muse_desktop.base.paths import resource, resources_dir, user_dirs
from muse_desktop.household.settings import Settings, Theme, load_settings, save_settings, settings_path


def test_missing_file_gives_defaults_without_a_message():
    result = load_settings()
    assert result.settings == Settings() and result.problem is None


def test_round_trip_and_file_in_the_config_folder(isolated_home):
    settings = Settings(user_type_id="nurse", zoom_percent=150, theme=Theme.HIGH_CONTRAST, read_aloud=True)
    path = save_settings(settings)
    assert path == settings_path() and path.parent == user_dirs().config
    assert str(path).startswith(str(isolated_home))
    assert load_settings().settings == settings
    assert json.loads(path.read_text())["schema_version"] == 1
    assert not [p for p in path.parent.iterdir() if TEMP_MARK in p.name]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"zoom_percent": "big"}', '{"read_aloud": 1}', "\x00\x01"])
def test_corrupt_file_is_kept_aside_and_defaults_used(content):
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(content)
    result = load_settings()
    assert result.settings == Settings()
    assert "damaged" in result.problem and result.moved_to.name in result.problem
    assert result.moved_to.read_text() == content  # nothing lost
    assert not path.exists()
    save_settings(result.settings)  # the next save does not touch the kept copy
    assert result.moved_to.read_text() == content


def test_values_out_of_range_are_brought_back():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"zoom_percent": 5000, "theme": "neon", "threads": -3}))
    settings = load_settings().settings
    assert (settings.zoom_percent, settings.theme, settings.threads) == (400, Theme.AUTO, 0)


def test_keys_from_newer_versions_survive_a_save():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"zoom_percent": 125, "future_option": {"a": 1}}))
    settings = load_settings().settings
    settings.zoom_percent = 175
    save_settings(settings)
    data = json.loads(path.read_text())
    assert data["future_option"] == {"a": 1} and data["zoom_percent"] == 175


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "file.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_resources_are_found():
    assert resource("user_types.tsv").is_file()
    assert (resources_dir() / "demo_corpus.txt").is_file()
    with pytest.raises(FileNotFoundError, match="resource missing"):
        resource("no-such-file.txt")


def test_leftovers_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "model.gguf"
    leftover = tmp_path / f".model.gguf{TEMP_MARK}abc123"
    leftover.write_bytes(b"half")
    unrelated = tmp_path / f".other.gguf{TEMP_MARK}zzz"
    unrelated.write_bytes(b"someone else's")
    atomic_write_text(target, "done")
    assert not leftover.exists() and unrelated.exists() and target.read_text() == "done"


def test_finished_files_get_normal_permissions(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    target = tmp_path / "shared.gguf"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    """Two writers of one file: the second must not delete the first one's work in progress."""
    import subprocess
    import sys

    target = tmp_path / "model.gguf"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        live = tmp_path / f".model.gguf{TEMP_MARK}{writer.pid}-abc123"
        live.write_bytes(b"half of a big file, still being written")
        dead = tmp_path / f".model.gguf{TEMP_MARK}{gone.pid}-def456"
        dead.write_bytes(b"left by a killed writer")
        atomic_write_text(target, "done")
        assert live.exists() and target.read_text() == "done"
        if os.name == "posix":
            assert not dead.exists()
    finally:
        writer.kill()
        writer.wait()
