#!/usr/bin/env python3
"""One-command set-up for MUsE Desktop, on a machine that has only Python (>= 3.10).

    python3 dev.py app     set up (first time) and open the app
    python3 dev.py test    set up everything (first time), check the import layers and the linter,
                           and run the whole test suite

Both create ``.venv`` beside this file and install into it; nothing is installed
system-wide. The first run compiles llama.cpp (llama-cpp-python ships only as
source): about 5-7 minutes on two cores, then pip reuses the built wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
# torch is installed before the rest so that pip keeps it (see README). A CPU build
# is all the tests need; set MUSE_TORCH to pick another, e.g. a CUDA build.
TORCH = os.environ.get("MUSE_TORCH", "torch==2.13.0")


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*cmd: str | os.PathLike[str], env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def stamp_ok(name: str) -> bool:
    stamp = VENV / f".installed-{name}"
    pyproject = ROOT / "pyproject.toml"
    return stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime


def mark(name: str) -> None:
    (VENV / f".installed-{name}").write_text("ok\n")


def ensure_venv() -> Path:
    if sys.version_info < (3, 10):
        sys.exit(f"MUsE Desktop needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    python = venv_python()
    if not python.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    return python


def install(extras: str) -> Path:
    python = ensure_venv()
    if stamp_ok(extras or "base"):
        return python
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    if extras and "train" in extras:
        probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True)
        if probe.returncode != 0:
            run(*pip, TORCH)
    print("Installing MUsE Desktop (the first time compiles llama.cpp: about 5-7 minutes) ...", flush=True)
    run(*pip, "-e", f".[{extras}]" if extras else ".")
    mark(extras or "base")
    return python


def cmd_app(argv: list[str]) -> int:
    python = install("speech")  # the chat, with speech input and the natural voice
    return subprocess.call([str(python), "-m", "muse_desktop", *argv], cwd=ROOT)


def cmd_test(argv: list[str]) -> int:
    python = install("train,dev,speech")  # every test runs: none is skipped for a missing extra
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"))
    bindir = python.parent
    print("+ lint-imports", flush=True)
    code = subprocess.call([str(bindir / "lint-imports")], cwd=ROOT, env=env)
    if code != 0:
        print("Import boundary broken (see above).", file=sys.stderr)
        return code
    print("+ ruff check", flush=True)
    code = subprocess.call([str(python), "-m", "ruff", "check", "."], cwd=ROOT, env=env)
    if code != 0:
        print("The linter found problems (see above; pyproject.toml says which rules).", file=sys.stderr)
        return code
    code = subprocess.call([str(python), "-m", "pytest", *argv], cwd=ROOT, env=env)
    if code == 5:
        print("No tests were collected: that counts as a failure.", file=sys.stderr)
        return 1
    return code


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("app", "test"):
        print(__doc__)
        return 2
    command, rest = sys.argv[1], sys.argv[2:]
    try:
        return cmd_app(rest) if command == "app" else cmd_test(rest)
    except subprocess.CalledProcessError as exc:
        print(f"Set-up failed while running: {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
