"""The caregiver lock: a PIN or passphrase (only a salted scrypt hash is kept), slowed-down guesses.

When a PIN is set and the app is locked, settings, the trainer, the comparison and
switching the model or the user type are closed until the PIN is entered. The person
using MUsE is fixed too (a kiosk), unless the caregiver let people switch between the
people already on the computer (``lock_allows_switching``, kept in the lock file, so a
lost or damaged file means "no switching"); adding or removing people stays closed.

The lock fails closed:

- Its state lives in its own owner-only (0600) file, written in two places (the
  config and the data folder), never in the appearance settings: a damaged
  ``settings.json`` cannot touch it.
- Whenever a PIN is set, the app starts locked, for the person it was locked for:
  no value in any file can say "unlocked".
- A lock file that exists but cannot be read keeps the app locked. If no copy
  holds a readable PIN, only the deliberate reset (``muse-desktop lock reset``)
  opens it again.
- A second witness, a row in the conversation database (``app_state``), records
  that a PIN is set and whether kiosk mode is on. Lock files that were deleted or
  edited to hold no PIN, while the witness says a PIN was set, count as damaged:
  still locked, with the kiosk on if it was (or if nobody can tell).

What it cannot stop: someone who deletes all of MUsE's files (an OS account with
its own password is the tool for that).

After ``FREE_ATTEMPTS`` wrong PINs each further try has to wait, twice as long each
time (up to ``MAX_WAIT_S``); the count and the wait are kept in the lock file, so
closing and reopening the app does not reset them. Every guess costs at least
``MIN_GUESS_S`` however fast the computer is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from muse_desktop.base.errors import MuseError
from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.base.paths import user_dirs

if TYPE_CHECKING:
    from muse_desktop.household.settings import Settings

SCHEME = "scrypt"
N, R, P = 2**16, 8, 1  # 64 MB and about a quarter of a second per check on a laptop
MIN_GUESS_S = 0.25  # a guess never costs less, however fast the computer
FREE_ATTEMPTS = 3
FIRST_WAIT_S = 30
MAX_WAIT_S = 15 * 60
MIN_PIN_DIGITS, MAX_PIN_LENGTH, MIN_PASSPHRASE = 4, 128, 8

LOCK_FILE = "caregiver-lock.json"
LOCK_SCHEMA = 1
UNREADABLE = "unreadable"  # stands in for a PIN hash that was lost: no PIN matches it

# What the lock file holds; these never go into settings.json.
CAREGIVER_FIELDS = ("caregiver_pin", "locked", "simple_mode", "pin_failures", "pin_wait_until", "kiosk_mode",
                    "locked_user", "lock_allows_switching")
# What "the locked person" is: restored from the lock file whatever settings.json says.
LOCKED_USER_FIELDS = ("user_type_id", "custom_user_type", "model_path", "adapter_path", "person_id")
# What follows the person chosen while the lock lets people switch (the computer's model stays fixed).
PERSON_FIELDS = ("user_type_id", "custom_user_type", "person_id")
LOCKED_MARK = "Locked by the caregiver"


class PinError(MuseError, ValueError):
    """A PIN that cannot be used or does not match; the message says why."""


def _derive(pin: str, salt: bytes, n: int = N, r: int = R, p: int = P) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * 2**20, dklen=32)


def check_pin_format(pin: str) -> None:
    """A PIN of 4 or more digits, or a passphrase of 8 or more characters."""
    if any(ord(c) < 32 for c in pin) or len(pin) > MAX_PIN_LENGTH:
        raise PinError(f"The PIN may be at most {MAX_PIN_LENGTH} characters, without tabs or line breaks.")
    if pin.isdigit() and len(pin) >= MIN_PIN_DIGITS:
        return
    if not pin.isdigit() and len(pin.strip()) >= MIN_PASSPHRASE:
        return
    raise PinError(f"Use at least {MIN_PIN_DIGITS} digits, or a passphrase of at least {MIN_PASSPHRASE} "
                   "letters and spaces.")


def hash_pin(pin: str) -> str:
    check_pin_format(pin)
    salt = os.urandom(16)
    return f"{SCHEME}${N}${R}${P}${salt.hex()}${_derive(pin, salt).hex()}"


def _well_formed(stored: str) -> bool:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return False
    return n >= 2**10 and n & (n - 1) == 0 and 1 <= r <= 64 and 1 <= p <= 16


def _matches(pin: str, stored: str) -> bool:
    if not _well_formed(stored):
        return False
    _scheme, n, r, p, salt, digest = stored.split("$")
    try:
        return hmac.compare_digest(_derive(pin, bytes.fromhex(salt), int(n), int(r), int(p)).hex(), digest)
    except (ValueError, MemoryError):
        return False


@dataclass
class Attempt:
    ok: bool
    message: str
    wait_s: int = 0


def has_pin(settings: Settings) -> bool:
    return bool(settings.caregiver_pin)


def is_locked(settings: Settings) -> bool:
    return has_pin(settings) and settings.locked


def set_pin(settings: Settings, new_pin: str) -> None:
    """Set or replace the PIN (the caller makes sure the app is unlocked); locks nothing by itself."""
    settings.caregiver_pin = hash_pin(new_pin)
    settings.pin_failures = 0
    settings.pin_wait_until = 0.0


def remove_pin(settings: Settings) -> None:
    settings.caregiver_pin = ""
    settings.locked = False
    settings.locked_user = {}
    settings.pin_failures = 0
    settings.pin_wait_until = 0.0


def can_switch_person(settings: Settings) -> bool:
    """Whether the person using MUsE may change now: always while unlocked; while locked only
    when the caregiver let people switch between the people already on the computer."""
    return not is_locked(settings) or settings.lock_allows_switching


def follow_person(settings: Settings) -> None:
    """Locked with switching allowed: the lock now fixes the person just chosen (written with the lock file)."""
    if is_locked(settings) and settings.lock_allows_switching:
        settings.locked_user = dict(settings.locked_user, **{name: getattr(settings, name) for name in PERSON_FIELDS})


def lock(settings: Settings) -> None:
    """Lock for the person chosen now: after a restart the chat opens for them."""
    if has_pin(settings):
        settings.locked = True
        settings.locked_user = {name: getattr(settings, name) for name in LOCKED_USER_FIELDS}


def try_pin(settings: Settings, pin: str, now: float | None = None) -> Attempt:
    """Check a PIN, respecting and updating the wait after wrong guesses."""
    started = time.perf_counter()
    try:
        return _try_pin(settings, pin, now)
    finally:
        left = MIN_GUESS_S - (time.perf_counter() - started)
        if left > 0:
            time.sleep(left)


def _try_pin(settings: Settings, pin: str, now: float | None) -> Attempt:
    now = time.time() if now is None else now
    if not has_pin(settings):
        return Attempt(True, "No PIN is set.")
    if settings.caregiver_pin == UNREADABLE:
        return Attempt(False, "The lock's file was damaged, so no PIN can be checked. "
                              "Use the reset described in the README (muse-desktop lock reset).")
    if now < settings.pin_wait_until:
        wait = int(settings.pin_wait_until - now + 0.999)
        return Attempt(False, f"Too many wrong PINs. Please wait {wait} seconds and try again.", wait)
    if _matches(pin, settings.caregiver_pin):
        settings.pin_failures = 0
        settings.pin_wait_until = 0.0
        return Attempt(True, "Unlocked.")
    settings.pin_failures += 1
    extra = settings.pin_failures - FREE_ATTEMPTS
    if extra >= 0:
        wait = min(FIRST_WAIT_S * 2**extra, MAX_WAIT_S)
        settings.pin_wait_until = now + wait
        return Attempt(False, f"That PIN is not right. Please wait {wait} seconds before trying again.", wait)
    left = FREE_ATTEMPTS - settings.pin_failures
    return Attempt(False, f"That PIN is not right. {left} more {'try' if left == 1 else 'tries'} before a wait.")


# -- the lock file ------------------------------------------------------------------------


def lock_paths() -> list[Path]:
    """Both copies of the lock file: losing one keeps the lock (and the PIN) in the other."""
    dirs = user_dirs()
    return [dirs.config / LOCK_FILE, dirs.data / LOCK_FILE]


@dataclass
class LockRead:
    values: dict[str, Any]  # caregiver fields for Settings
    problem: str | None = None  # shown to the person when set
    found: bool = True  # False: no lock file anywhere (first run, or migrating old settings)
    repair: bool = False  # a copy is missing or damaged while another holds the PIN


def _parse(raw: str) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("schema") != LOCK_SCHEMA:
        raise ValueError("not a lock file")
    pin = data.get("pin_hash", "")
    if not isinstance(pin, str) or (pin and not _well_formed(pin)):
        raise ValueError("the PIN hash is damaged")
    values: dict[str, Any] = {"caregiver_pin": pin}
    for name, kind in (("pin_failures", int), ("pin_wait_until", (int, float)), ("simple_mode", bool),
                       ("kiosk_mode", bool), ("locked_user", dict), ("lock_allows_switching", bool)):
        value = data.get(name)
        if value is not None and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            values[name] = value
    values["pin_wait_until"] = float(values.get("pin_wait_until", 0.0))
    user = values.get("locked_user", {})
    values["locked_user"] = {k: v for k, v in user.items() if k in LOCKED_USER_FIELDS
                             and (isinstance(v, int) and not isinstance(v, bool) if k == "person_id" else isinstance(v, str))}
    return values


def read_lock() -> LockRead:
    """The caregiver state from the lock files, failing closed (see the module docstring)."""
    good: list[dict[str, Any]] = []
    damaged: list[Path] = []
    for path in lock_paths():
        try:
            good.append(_parse(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, UnicodeDecodeError):
            damaged.append(path)
    with_pin = [values for values in good if values["caregiver_pin"]]
    if with_pin:
        values = dict(with_pin[0], locked=True)  # a PIN means locked at every start
        # A lost, damaged or emptied copy is written again from the good one at once.
        return LockRead(values, repair=len(with_pin) < len(lock_paths()))
    witness = _read_witness()
    if damaged or (witness or {}).get("pin"):
        from muse_desktop.household.scope import guard_path

        # Unknown whether the kiosk was on: assume it was (a missing guard then refuses every question).
        kiosk = guard_path().exists() or witness is None or bool(witness.get("kiosk", True))
        where = damaged[0] if damaged else lock_paths()[0]
        how = "could not be read" if damaged else "is missing or was changed"
        return LockRead(
            {"caregiver_pin": UNREADABLE, "locked": True, "kiosk_mode": kiosk, "simple_mode": False},
            f"{LOCKED_MARK}: the lock's file {how} ({where}), so MUsE stays locked. "
            "The caregiver can reset the lock as the README describes (muse-desktop lock reset).")
    if good:
        return LockRead(dict(good[0], locked=False))
    return LockRead({}, found=False)


def write_lock(settings: Settings) -> None:
    """Write the caregiver state to both copies, readable by this user only."""
    data = {
        "schema": LOCK_SCHEMA,
        "pin_hash": "" if settings.caregiver_pin == UNREADABLE else settings.caregiver_pin,
        "locked": settings.locked,
        "pin_failures": settings.pin_failures,
        "pin_wait_until": settings.pin_wait_until,
        "simple_mode": settings.simple_mode,
        "kiosk_mode": settings.kiosk_mode,
        "locked_user": settings.locked_user,
        "lock_allows_switching": settings.lock_allows_switching,
    }
    if settings.caregiver_pin == UNREADABLE:
        return  # nothing readable to write: the damaged files stay as they are until the reset
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    for path in lock_paths():
        atomic_write_text(path, text, mode=0o600)
    _write_witness(bool(data["pin_hash"]), settings.kiosk_mode)


WITNESS_KEY = "caregiver_lock"


def _read_witness() -> dict | None:
    """What the database says about the lock: {"pin": bool, "kiosk": bool}, or None if it cannot say."""
    from muse_desktop.chat.store import read_app_state

    raw = read_app_state(WITNESS_KEY)
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_witness(pin: bool, kiosk: bool) -> None:
    from muse_desktop.chat.store import StoreError, write_app_state

    if not pin and _read_witness() is None:
        return  # nothing to witness yet: no database is made just to say "no PIN"
    try:
        write_app_state(WITNESS_KEY, json.dumps({"pin": pin, "kiosk": bool(kiosk)}))
    except (StoreError, OSError) as exc:
        raise OSError(f"the lock's record in the database could not be written ({exc})") from None


def reset_lock() -> list[Path]:
    """The deliberate reset: forget the PIN and open everything; returns the files removed."""
    removed = []
    for path in lock_paths():
        if path.exists():
            path.unlink()
            removed.append(path)
    from muse_desktop.household.settings import Settings

    write_lock(Settings())  # an explicit "no PIN" (files and witness), so an old settings file is not migrated again
    return removed
