"""Errors the converters raise: each message names the file (and tensor) and says what to do."""

from muse_desktop.base.errors import MuseError


class ConversionError(MuseError, ValueError):
    """A conversion cannot go on; the message is meant for the user as it is."""


def read_json(path, missing: str) -> dict:
    """A JSON file's content; ``missing`` is the message when the file is absent."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}).") from None
