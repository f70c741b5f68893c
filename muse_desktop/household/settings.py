"""User settings: a dataclass persisted as JSON in the platform config folder.

Saving is atomic (temporary file + rename). Loading never fails: a missing file
gives the defaults; an unreadable or corrupt file is moved aside (never silently
overwritten) and the defaults are used, with a message the app shows the user.
Keys written by a newer version are kept and written back unchanged.

The caregiver's lock (PIN hash, locked state, simple and kiosk mode) is not kept
here but in its own owner-only file (:mod:`muse_desktop.household.lock`): a damaged or
edited settings file never opens the lock.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muse_desktop.household import lock
from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.base.paths import user_dirs

SETTINGS_FILE = "settings.json"
SCHEMA_VERSION = 1


class Theme:
    """Names of the colour themes; AUTO follows the system's light or dark setting."""

    AUTO = "auto"
    NORMAL = "normal"  # light
    DARK = "dark"
    HIGH_CONTRAST = "high-contrast"
    ALL = (AUTO, NORMAL, DARK, HIGH_CONTRAST)


@dataclass
class Settings:
    """Everything the app remembers between runs (except conversations)."""

    user_type_id: str = ""  # an id from the catalog; empty until the first-run choice
    custom_user_type: str = ""  # used instead when the person typed their own
    instruction_template: str = ""  # empty means the MUsE default
    model_path: str = ""
    adapter_path: str = ""  # a GGUF LoRA adapter applied to model_path at run time
    adapter_scale: float = 1.0  # how much of it: 0 switches it off, 1 is as trained
    zoom_percent: int = 100
    theme: str = Theme.AUTO
    read_aloud: bool = False
    threads: int = 0  # 0: choose from the CPU
    context_length: int = 4096
    long_context: bool = False  # LongRoPE models: let the context go past the original one (costs accuracy)
    gpu_layers: int = 0
    hub_endpoint: str = ""  # empty: $MUSE_HUB_ENDPOINT, $HF_ENDPOINT or huggingface.co
    muse_adapter_repo: str = ""  # empty: $MUSE_ADAPTER_REPO, else seohyunqkr/MUsE; "none": the base alone
    # The base's commit (or branch) Get MUsE fetches: an adapter is exact only on the weights it was trained on.
    base_revision: str = "main"
    # Caregiver lock (muse_desktop.household.lock): kept in the lock file, never in settings.json.
    caregiver_pin: str = ""  # only as a salted scrypt hash
    locked: bool = False
    simple_mode: bool = False
    pin_failures: int = 0
    pin_wait_until: float = 0.0
    preference_grid: str = ""  # e.g. "muse:1.0, muse:0.1, plain:1.0, plain:0.1" (empty: that research grid)
    kiosk_mode: bool = False  # off-topic questions get a kind refusal (muse_desktop.household.scope)
    locked_user: dict[str, Any] = field(default_factory=dict)  # who the chat opens for while locked
    # Locked, people may still switch between the people on this computer (never add or remove one).
    lock_allows_switching: bool = False
    # Speech (muse_desktop.speech.voice, muse_desktop.speech.listen); read_aloud above means "read every answer aloud".
    voice_id: str = "en_US-joe-medium"  # a natural voice, or "system" for the computer's own voice
    reading_speed: float = 0.0  # 0: chosen by who is asking (slower for young children and older adults)
    speech_sends: bool = False  # a spoken question is sent at once instead of waiting in the question box
    listen_model: str = "ggml-base.en.bin"
    person_id: int = 0  # the person last chosen on a shared computer (muse_desktop.household.people); 0: none yet
    extra: dict[str, Any] = field(default_factory=dict)  # keys from newer versions

    def validated(self) -> "Settings":
        """A copy with out-of-range values brought back into range."""
        copy = dataclasses.replace(self)
        copy.zoom_percent = min(max(int(copy.zoom_percent), 50), 400)
        if copy.theme not in Theme.ALL:
            copy.theme = Theme.AUTO
        copy.threads = max(int(copy.threads), 0)
        copy.context_length = min(max(int(copy.context_length), 256), 131072)
        copy.gpu_layers = max(int(copy.gpu_layers), -1)
        copy.adapter_scale = min(max(float(copy.adapter_scale), 0.0), 2.0)
        copy.base_revision = str(copy.base_revision).strip() or "main"
        copy.reading_speed = 0.0 if float(copy.reading_speed) <= 0 else min(max(float(copy.reading_speed), 0.5), 2.0)
        return copy


_CAREGIVER = lock.CAREGIVER_FIELDS
_ALL_FIELDS = {f.name: f for f in dataclasses.fields(Settings) if f.name != "extra"}
_FIELDS = {name: f for name, f in _ALL_FIELDS.items() if name not in _CAREGIVER}  # what settings.json holds


@dataclass
class LoadResult:
    settings: Settings
    problem: str | None = None  # shown to the user when set
    moved_to: Path | None = None


def settings_path() -> Path:
    return user_dirs().config / SETTINGS_FILE


def _coerce(name: str, value: Any) -> Any:
    default = getattr(Settings(), name)
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise TypeError(f"'{name}' should be {kind.__name__}, found {type(value).__name__}")


def _move_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    path.replace(target)
    return target


def load_settings(path: Path | None = None) -> LoadResult:
    """Read the settings and the caregiver lock; never raises for a bad file (see the module docstring)."""
    result = _load_appearance(path or settings_path())
    legacy = result.settings.extra.pop("_legacy_caregiver", {})
    read = lock.read_lock()
    values = read.values
    if not read.found and legacy:  # settings from before the lock had its own file
        values = dict(legacy, locked=bool(legacy.get("caregiver_pin")))
    for name, value in values.items():
        setattr(result.settings, name, value)
    if lock.is_locked(result.settings):
        for name, value in result.settings.locked_user.items():
            setattr(result.settings, name, value)  # the locked person, whatever settings.json says
    if read.repair or (not read.found and legacy):
        try:
            lock.write_lock(result.settings)
        except OSError:
            pass  # still locked; the next save tries again
    if read.problem:
        result.problem = f"{result.problem}\n\n{read.problem}" if result.problem else read.problem
    return result


def _load_appearance(path: Path) -> LoadResult:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return LoadResult(Settings())
    except OSError as exc:
        return LoadResult(Settings(), f"Could not read your settings ({exc}); using the defaults.")
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the file does not hold a settings object")
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        legacy: dict[str, Any] = {}
        for key, value in data.items():
            if key == "schema_version":
                continue
            if key in _FIELDS:
                values[key] = _coerce(key, value)
            elif key in _CAREGIVER:
                legacy[key] = value  # only ever read to move it into the lock file
            else:
                extra[key] = value
        settings = Settings(**values, extra=extra).validated()
        if legacy:
            try:
                settings.extra["_legacy_caregiver"] = {k: _coerce(k, v) for k, v in legacy.items()}
            except TypeError:
                pass
        return LoadResult(settings)
    except (ValueError, TypeError) as exc:
        moved = _move_aside(path)
        return LoadResult(
            Settings(),
            f"Your settings file was damaged ({exc}). It was kept as {moved.name} "
            "and the default settings are used.",
            moved,
        )


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Write the settings and the caregiver lock atomically; returns the settings path."""
    path = path or settings_path()
    data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    data.update(settings.extra)
    for name in _FIELDS:
        data[name] = getattr(settings, name)
    lock.write_lock(settings)
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path
