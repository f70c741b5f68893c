"""The ``muse-desktop`` command: no arguments opens the app; sub-commands work headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from muse_desktop import APP_NAME, __version__


class CliError(Exception):
    """A failure reported to the user as one line, without a traceback."""


def _cmd_user_types(args: argparse.Namespace) -> int:
    from muse_desktop.usertypes import load_catalog

    catalog = load_catalog()
    found = catalog.search(args.search or "")
    if args.group:
        wanted = args.group.casefold()
        found = [t for t in found if wanted in t.group.casefold()]
    if args.limit:
        found = found[: args.limit]
    if not found:
        print(f"No user type matches '{args.search}'. You can type your own in the app.")
        return 1
    width = max(len(t.id) for t in found)
    for user_type in found:
        print(f"{user_type.id:<{width}}  {user_type.prompt_name}  [{user_type.group}]  {user_type.description}")
    if sys.stdout.isatty():
        print(f"\n{len(found)} of {len(catalog)} user types", file=sys.stderr)
    return 0


def _cmd_demo_model(args: argparse.Namespace) -> int:
    try:
        from muse_desktop.demo_model import build_demo_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CliError(f"building the demo model needs sentencepiece and safetensors ({exc})") from None
    path = build_demo_model(args.out_dir, args.variant, seed=args.seed)
    print(f"Demo model ({args.variant}, random weights) written to {path}")
    return 0


def _open_app() -> int:
    try:
        from muse_desktop.ui.app import run_app
    except ImportError as exc:
        raise CliError(f"the desktop window needs PySide6, which could not be loaded ({exc})") from None
    return run_app(sys.argv[:1])


def build_parser() -> argparse.ArgumentParser:
    from muse_desktop.demo_model import Variant

    parser = argparse.ArgumentParser(
        prog="muse-desktop",
        description=f"{APP_NAME}: an offline assistant that adapts its answers to who you are. "
        "Run without a command to open the app.",
    )
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    user_types = commands.add_parser("user-types", help="list or search the user types")
    user_types.add_argument("--search", metavar="TEXT", help="match names, ignoring case and accents")
    user_types.add_argument("--group", metavar="GROUP", help="only types whose group contains GROUP")
    user_types.add_argument("--limit", type=int, metavar="N", help="show at most N types")
    user_types.set_defaults(func=_cmd_user_types)

    demo = commands.add_parser("demo-model", help="build the tiny demo checkpoint (random weights)")
    demo.add_argument("out_dir", metavar="OUT_DIR")
    demo.add_argument("--variant", choices=Variant.ALL, default=Variant.MINI_4K)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command is None:
            return _open_app()
        return args.func(args)
    except CliError as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muse-desktop: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"muse-desktop: {exc}", file=sys.stderr)
        return 1
