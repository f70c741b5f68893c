"""Read a pickle that holds only plain data: lists, dicts, tuples, strings, numbers.

Some published datasets (MUsE's training code among them) are pickles. Opening a
pickle the normal way runs whatever it names: a pickle is a small program, and its
GLOBAL / STACK_GLOBAL / EXT opcodes fetch any importable callable (``os.system``,
``builtins.eval``) that REDUCE / BUILD / NEWOBJ then call. Plain data needs none of
that, so :class:`PlainUnpickler` refuses every global before it is looked up.
"""

from __future__ import annotations

import io
import pickle

from muse_desktop.base.errors import MuseError

PLAIN = (str, int, float, bool, type(None))


class PickleRefused(MuseError, ValueError):
    """The pickle holds more than plain data; the message says what and why it is not opened."""


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that can build only what needs no import.

    ``find_class`` is the one door through which a pickle reaches code (the EXT
    opcodes go through it too), so refusing every global there means no callable
    can ever be obtained, let alone called. Persistent ids would hand objects to
    our own code, so they are refused as well.
    """

    def find_class(self, module: str, name: str):
        raise PickleRefused(
            f"it asks for {module}.{name}, which a pickle can use to run code on this computer, "
            "so it is not opened. Save the data as Parquet, JSON Lines or CSV"
        )

    def persistent_load(self, pid):
        raise PickleRefused("it refers to outside objects (persistent ids), so it is not opened")


def _check_plain(value, depth: int = 0, seen: set[int] | None = None) -> None:
    """Plain data, each list, tuple or dict appearing once.

    A pickle can refer back to a container it built (its memo), so a few hundred
    bytes can describe a list holding itself, or lists sharing lists 40 levels deep:
    2**40 items to walk. Plain data never needs that, so a container met twice is refused.
    """
    seen = set() if seen is None else seen
    if depth > 100:
        raise PickleRefused("it is nested too deeply to be plain data")
    if isinstance(value, PLAIN):
        return
    if isinstance(value, (list, tuple, dict)):
        if id(value) in seen:
            raise PickleRefused("it uses one of its lists or tables twice, which plain data never does")
        seen.add(id(value))
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, depth + 1, seen)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise PickleRefused(f"it has a dictionary key of type {type(key).__name__}")
            _check_plain(item, depth + 1, seen)
        return
    raise PickleRefused(f"it holds a {type(value).__name__}, not plain lists, dicts, strings and numbers")


def load_plain(data: bytes):
    """The plain data in ``data``; :class:`PickleRefused` for anything else."""
    try:
        value = PlainUnpickler(io.BytesIO(data)).load()
    except PickleRefused:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise PickleRefused(f"it is not a readable pickle ({exc})") from None
    _check_plain(value)
    return value
