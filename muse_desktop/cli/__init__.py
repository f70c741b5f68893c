"""The ``muse-desktop`` command: no arguments opens the app; sub-commands work headless.

One module per domain, each holding its parsers beside their handlers:
:mod:`~muse_desktop.cli.chat` (user-types, chat), :mod:`~muse_desktop.cli.models` (demo-model,
convert, convert-adapter, quantize, get-muse), :mod:`~muse_desktop.cli.training` (train,
export), :mod:`~muse_desktop.cli.data` (get-dataset, build-data, augment, preferences) and
:mod:`~muse_desktop.cli.household` (lock, kiosk). Errors are handled once, in :func:`main`.
Heavy modules are imported by the handlers when they run, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from muse_desktop import APP_NAME, __version__
from muse_desktop.cli import chat, data, household, models, training
from muse_desktop.cli.common import CliError
from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import Cancelled

DOMAINS = (chat, models, training, data, household)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="muse-desktop",
        description=f"{APP_NAME}: an offline assistant that adapts its answers to who you are. "
        "Run without a command to open the app.",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    parser.add_argument("--self-test", nargs="?", const="", metavar="MODEL.gguf",
                        help="check this install headless (resources, database, a model answering, the "
                             "quantizer) and exit 0/1; without a model the demo model is built")
    parser.add_argument("--screenshot", metavar="PNG", help=argparse.SUPPRESS)  # open, save the window, quit
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for domain in DOMAINS:
        domain.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from muse_desktop.base.process import RUN_MODULE, run_module

    if argv[:1] == [RUN_MODULE]:  # a child process of a frozen bundle
        return run_module(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.self_test is not None:
            from muse_desktop.selftest import run_self_test

            return run_self_test(args.self_test or None)
        if args.command is None:
            return _open_app(args.screenshot)
        return args.func(args)
    except MuseError as exc:  # every error the app raises on purpose
        print(f"muse-desktop: {exc.for_person()}", file=sys.stderr)
        return exc.exit_code
    except Cancelled:
        print("muse-desktop: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("muse-desktop: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 1


def _open_app(screenshot: str | None = None) -> int:
    try:
        from muse_desktop.ui.app import run_app
    except ImportError as exc:
        raise CliError(f"the desktop window needs PySide6, which could not be loaded ({exc})") from None
    return run_app(sys.argv[:1], screenshot=screenshot)
