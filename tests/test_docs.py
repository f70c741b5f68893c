"""The map of the code (docs/ARCHITECTURE.md) names only files that exist, and nothing points outside the repo."""

from __future__ import annotations

import re
import subprocess

from helpers import REPO

MAP = REPO / "docs" / "ARCHITECTURE.md"


def named_paths(text: str) -> list[str]:
    """Every `code span` that names a file or folder (``ui/chat.py: send`` names ui/chat.py)."""
    paths = []
    for span in re.findall(r"`([^`\n]+)`", text):
        candidate = span.split(":")[0].strip()
        if re.fullmatch(r"[\w./-]+(\.py|\.md|\.toml|\.spec|/)", candidate):
            paths.append(candidate)
    return paths


def missing(paths: list[str]) -> list[str]:
    """Paths found neither from the repository root nor inside muse_desktop/."""
    return [p for p in paths if not any((base / p).exists() for base in (REPO, REPO / "muse_desktop"))]


def test_the_map_names_only_files_that_exist():
    paths = named_paths(MAP.read_text(encoding="utf-8"))
    assert len(paths) >= 30  # it does name the files
    assert missing(paths) == []


def test_a_file_that_is_gone_is_seen():
    assert missing(named_paths("The engine (`chat/engine.py: generate`) and `chat/gone.py`.")) == ["chat/gone.py"]


def test_nothing_points_at_a_design_file_outside_the_repo():
    outside = re.compile(r"\b" + "DES" + "IGN" + r"\b")  # in parts, so this file does not match itself
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = [name for name in tracked if name.endswith((".py", ".md", ".toml", ".spec", ".txt"))
            and outside.search((REPO / name).read_text(encoding="utf-8", errors="replace"))]
    assert hits == []
