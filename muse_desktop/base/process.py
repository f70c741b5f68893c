"""Starting this program's own modules as child processes, in a checkout and in a frozen bundle.

Quantization and training run in child processes. From Python that is
``python -m MODULE``; in a PyInstaller bundle ``sys.executable`` is the app itself,
which understands ``--run-module MODULE`` (see :func:`muse_desktop.cli.main`).
"""

from __future__ import annotations

import runpy
import sys

RUN_MODULE = "--run-module"
# Only these may be started this way: the flag is not a general code runner.
CHILD_MODULES = ("converters.quantize", "converters.reference", "muse_desktop.training.child")


def module_command(module: str, *args: str) -> list[str]:
    if module not in CHILD_MODULES:
        raise ValueError(f"{module} is not a child-process module")
    if getattr(sys, "frozen", False):
        return [sys.executable, RUN_MODULE, module, *args]
    return [sys.executable, "-m", module, *args]


def run_module(argv: list[str]) -> int:
    """``--run-module MODULE ARGS...``: run MODULE as ``__main__`` with ARGS (frozen bundles)."""
    if not argv or argv[0] not in CHILD_MODULES:
        print(f"{RUN_MODULE} takes one of: {', '.join(CHILD_MODULES)}", file=sys.stderr)
        return 2
    sys.argv = [argv[0], *argv[1:]]
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
