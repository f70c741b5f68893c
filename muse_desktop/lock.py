"""The caregiver's PIN: stored only as a salted scrypt hash, wrong guesses slowed down.

When a PIN is set and the app is locked, settings, the trainer and switching the
model or the user type are closed until the PIN is entered. After
``FREE_ATTEMPTS`` wrong PINs each further try has to wait, twice as long each time
(up to ``MAX_WAIT_S``); the count and the wait are saved with the settings, so
closing and reopening the app does not reset them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from muse_desktop.settings import Settings

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1  # about 16 MB and a few tens of ms per check
FREE_ATTEMPTS = 3
FIRST_WAIT_S = 30
MAX_WAIT_S = 15 * 60


class PinError(ValueError):
    pass


def _derive(pin: str, salt: bytes, n: int = N, r: int = R, p: int = P) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 2**20, dklen=32)


def check_pin_format(pin: str) -> None:
    if not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise PinError("The PIN must be 4 to 12 digits.")


def hash_pin(pin: str) -> str:
    check_pin_format(pin)
    salt = os.urandom(16)
    return f"{SCHEME}${N}${R}${P}${salt.hex()}${_derive(pin, salt).hex()}"


def _matches(pin: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != SCHEME:
            return False
        return hmac.compare_digest(_derive(pin, bytes.fromhex(salt), int(n), int(r), int(p)).hex(), digest)
    except (ValueError, TypeError):
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
    settings.pin_failures = 0
    settings.pin_wait_until = 0.0


def try_pin(settings: Settings, pin: str, now: float | None = None) -> Attempt:
    """Check a PIN, respecting and updating the wait after wrong guesses."""
    now = time.time() if now is None else now
    if not has_pin(settings):
        return Attempt(True, "No PIN is set.")
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
