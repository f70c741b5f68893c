"""Where things live: bundled resources and the per-user platform folders.

User data never lives inside the install or the frozen bundle; it goes to the
platform's data, config and cache folders (through platformdirs). Setting
``MUSE_HOME`` puts all of them under one folder instead, which the tests and
portable installs use.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from muse_desktop import APP_ID

ENV_HOME = "MUSE_HOME"
ENV_RESOURCES = "MUSE_RESOURCES"


def resources_dir() -> Path:
    """The folder holding the shipped data files (user types, presets, themes)."""
    override = os.environ.get(ENV_RESOURCES)
    if override:
        return Path(override)
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:  # PyInstaller bundle
        return Path(frozen_root) / "resources"
    try:
        import muse_resources  # installed wheel or editable install

        return Path(muse_resources.__file__).resolve().parent
    except ImportError:  # a bare source checkout on sys.path
        return Path(__file__).resolve().parents[2] / "resources"


def resource(*parts: str) -> Path:
    """Path of one shipped data file; raises FileNotFoundError with the path tried."""
    path = resources_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"MUsE Desktop resource missing: {path}")
    return path


@dataclass(frozen=True)
class UserDirs:
    """The per-user folders, created on first use."""

    data: Path
    config: Path
    cache: Path
    models: Path
    logs: Path

    def ensure(self) -> "UserDirs":
        for folder in (self.data, self.config, self.cache, self.models, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def user_dirs() -> UserDirs:
    """The folders for this user, honouring ``MUSE_HOME``."""
    home = os.environ.get(ENV_HOME)
    if home:
        root = Path(home)
        return UserDirs(
            data=root / "data",
            config=root / "config",
            cache=root / "cache",
            models=root / "data" / "models",
            logs=root / "logs",
        )
    import platformdirs

    dirs = platformdirs.PlatformDirs(appname=APP_ID, appauthor=False)
    data = Path(dirs.user_data_dir)
    return UserDirs(
        data=data,
        config=Path(dirs.user_config_dir),
        cache=Path(dirs.user_cache_dir),
        models=data / "models",
        logs=Path(dirs.user_log_dir),
    )
