"""What every command shares: the one-line error, and printing a long job's events."""

from __future__ import annotations

import sys

from muse_desktop.base.errors import MuseError


class CliError(MuseError):
    """A command that cannot be run as given, reported as one line without a traceback."""

    exit_code = 2


def _amount(event) -> str:
    if event.unit == "bytes":
        return f"{event.done / 2**20:.1f}/{event.total / 2**20:.1f} MiB"
    return f"{event.done:g}/{event.total:g} {event.unit}"


def run_events(events) -> object:
    """Print a generator's events (a bar on a terminal, plain lines otherwise); return Done's data."""
    from muse_desktop.base.events import Done, Log, Progress

    tty = sys.stderr.isatty()
    result = None
    for event in events:
        if isinstance(event, Progress):
            if tty:
                filled = int(30 * event.fraction)
                line = f"[{'#' * filled}{'-' * (30 - filled)}] {_amount(event)} {event.message}"
                print(f"\r{line[:110]:<110}", end="", file=sys.stderr, flush=True)
            else:
                print(f"{_amount(event)} {event.message}", file=sys.stderr, flush=True)
        elif isinstance(event, Log):
            print(("\n" if tty else "") + event.message, file=sys.stderr, flush=True)
        elif isinstance(event, Done):
            if tty:
                print(file=sys.stderr)
            print(event.message, flush=True)
            result = event
    return result


def training_imports():
    try:
        import torch  # noqa: F401  (checked here so the message is about the install, not a traceback)
    except ImportError:
        raise CliError("training needs the training extra: pip install 'muse-desktop[train]'") from None
