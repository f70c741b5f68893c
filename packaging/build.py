#!/usr/bin/env python3
"""Build the installable bundles with PyInstaller and report their sizes.

    python packaging/build.py [chat|studio|all] [--self-test]

Bundles go to packaging/dist/muse-chat/ and packaging/dist/muse-studio/ (run
`muse-chat` / `muse-studio` inside). Run it with the Python that has the app
installed (`.venv/bin/python`); `pip install pyinstaller` first (the dev extra has it).
With --self-test each bundle runs its own `--self-test` after the build.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST = HERE / "dist"  # --dist changes it
NAMES = {"chat": "muse-chat", "studio": "muse-studio"}
# Chat bundle budget, set from the first measurement (see packaging/README.md).
CHAT_BUDGET_MB = 260  # first build: 235 MB (Linux x86-64, PySide6-Essentials 6.11, numpy 2)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def executable(bundle: str) -> Path:
    name = NAMES[bundle] + (".exe" if os.name == "nt" else "")
    return DIST / NAMES[bundle] / name


def build(bundle: str) -> tuple[float, int]:
    start = time.monotonic()
    env = {**os.environ, "MUSE_BUNDLE": bundle}
    subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
                    "--distpath", str(DIST), "--workpath", str(HERE / "build" / bundle), str(HERE / "muse.spec")],
                   check=True, env=env)
    print(f"  (work files in {HERE / 'build' / bundle})")
    return time.monotonic() - start, folder_size(DIST / NAMES[bundle])


def torch_inside(bundle_dir: Path) -> list[str]:
    """Files of the training stack found in a bundle (the chat bundle must have none)."""
    marks = ("torch", "transformers", "peft", "bitsandbytes", "libtorch")
    return sorted(str(p.relative_to(bundle_dir)) for p in bundle_dir.rglob("*")
                  if p.name.split(".")[0].lower() in marks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", default="chat", choices=["chat", "studio", "all"])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--dist", type=Path, help="where the bundles go (default packaging/dist)")
    args = parser.parse_args()
    global DIST
    if args.dist:
        DIST = args.dist.resolve()
    failed = False
    for bundle in (["chat", "studio"] if args.which == "all" else [args.which]):
        seconds, size = build(bundle)
        print(f"{NAMES[bundle]}: built in {seconds:.0f} s, {size / 2**20:.0f} MB in {DIST / NAMES[bundle]}")
        if bundle == "chat":
            heavy = torch_inside(DIST / NAMES[bundle])
            print(f"  training stack inside: {', '.join(heavy) if heavy else 'none'}")
            if size > CHAT_BUDGET_MB * 2**20:
                print(f"  OVER BUDGET: {size / 2**20:.0f} MB > {CHAT_BUDGET_MB} MB")
                failed = True
            failed |= bool(heavy)
        if args.self_test:
            env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
            result = subprocess.run([str(executable(bundle)), "--self-test"], env=env)
            failed |= result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
