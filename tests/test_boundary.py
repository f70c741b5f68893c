"""The architecture rules (UI-free core, lazy heavy imports), checked in ways that fail when broken."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from pathlib import Path

import pytest

import muse_desktop

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "pyarrow")
# Modules allowed to import the training stack at module level (none yet: the
# trainer arrives later and must be listed here deliberately).
# The modules that need torch the moment they are imported (the trainer's own process).
TRAINING_MODULES = {"muse_desktop.training.recipe", "muse_desktop.training.evaluate", "muse_desktop.training.dpo"}
QT = "Only muse_desktop.ui imports Qt"
LAYERS = "Layers: each part imports only the layers below it"
LINT_IMPORTS = Path(sys.executable).parent / ("lint-imports.exe" if os.name == "nt" else "lint-imports")


def heavy_after_importing(modules: list[str]) -> list[str]:
    """Import ``modules`` in a fresh interpreter; return the heavy modules that got loaded."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def all_modules(package=muse_desktop) -> list[str]:
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        names.append(info.name)
    return names


def test_import_muse_desktop_prompt_and_chat_path_leave_out_torch():
    chat_path = ["muse_desktop", "muse_desktop.base.prompting", "muse_desktop.base.prompting.contract", "muse_desktop.cli"]
    chat_path += [m for m in all_modules() if m.startswith("muse_desktop.chat")]
    assert heavy_after_importing(chat_path) == []


def test_no_module_outside_the_training_code_imports_torch_on_import():
    import converters

    modules = [m for m in all_modules() + all_modules(converters) if m not in TRAINING_MODULES]
    modules.remove("muse_desktop.__main__")
    assert len(modules) >= 15
    assert heavy_after_importing(modules) == []


def test_the_torch_check_itself_detects_torch():
    """Guards the guard: the same helper must see torch when something imports it."""
    assert "torch" in heavy_after_importing(["muse_desktop", "torch"])


def run_lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([str(LINT_IMPORTS)], cwd=root, env=env, capture_output=True, text=True)


def test_import_contracts_are_kept():
    result = run_lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
    assert f"{LAYERS} KEPT" in result.stdout


def copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for name in ("muse_desktop", "converters"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    "module, source, contract",
    [
        ("muse_desktop/base/prompting/leak.py", "from PySide6 import QtCore\n", QT),
        ("converters/leak.py", "import PySide6.QtWidgets\n", QT),
        ("muse_desktop/chat/usertypes_extra.py", "import shiboken6\n", QT),
        # Every boundary of the layers, crossed upwards once:
        ("muse_desktop/base/prompting/leak.py", "from muse_desktop.ui import app\n", LAYERS),  # ground floor -> UI
        ("muse_desktop/training/leak.py", "import muse_desktop.ui.trainer\n", LAYERS),  # feature -> UI
        ("muse_desktop/ui/leak.py", "from muse_desktop import cli\n", LAYERS),  # UI -> CLI
        ("muse_desktop/chat/store.py", "import muse_desktop.selftest\n", LAYERS),  # feature -> self-test
        ("converters/leak.py", "from muse_desktop.chat.engine import ChatEngine\n", LAYERS),  # converters -> feature
        ("muse_desktop/base/events.py", "import converters.verify\n", LAYERS),  # ground floor -> converters
        ("muse_desktop/base/fileio.py", "from muse_desktop.base.events import Done\n", LAYERS),  # ground floor siblings
    ],
)
def test_import_contracts_fail_when_broken(tmp_path, module, source, contract):
    root = copy_tree(tmp_path)
    target = root / module
    # An existing module gets one more line; a new one holds only the forbidden import.
    target.write_text((target.read_text() + "\n" if target.exists() else "") + source)
    result = run_lint_imports(root)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout


def layer_modules() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    contracts = {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}
    names = set()
    for layer in contracts[LAYERS]["layers"]:
        names.update(part.strip() for part in layer.replace("|", ":").split(":"))
    return names


def unplaced(modules: list[str], layers: set[str]) -> list[str]:
    """Modules in no layer: neither a layer nor inside one (a folder counts when all it holds is placed)."""
    def placed(module):
        return any(module == layer or module.startswith(layer + ".") for layer in layers)

    return sorted(m for m in modules if not placed(m) and not (
        any(o.startswith(m + ".") for o in modules) and all(placed(o) for o in modules if o.startswith(m + "."))))


def test_every_module_has_a_layer():
    """A new module or folder must be placed in the layers, or nothing guards it."""
    import converters

    modules = [m for m in all_modules() + all_modules(converters) if m != "muse_desktop"]
    assert unplaced(modules, layer_modules()) == []


def test_the_layer_check_sees_a_module_without_a_layer():
    """Guards the guard above: a folder left out of the layers is caught, with each module in it."""
    import converters

    modules = [m for m in all_modules() + all_modules(converters) if m != "muse_desktop"]
    missing = unplaced(modules, layer_modules() - {"muse_desktop.household"})
    assert "muse_desktop.household.lock" in missing and "muse_desktop.household" in missing
    assert unplaced(modules, layer_modules() - {"muse_desktop.base.events"}) == ["muse_desktop.base",
                                                                            "muse_desktop.base.events"]


def test_every_package_is_listed_for_the_distribution():
    """setuptools installs only the packages pyproject.toml lists (resources/ is mapped by hand)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {"muse_resources"}
    for root in ("muse_desktop", "converters"):
        for init in (REPO / root).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    assert listed == found
    assert config["tool"]["setuptools"]["package-dir"] == {"muse_resources": "resources"}


def sql_outside_the_store(base: Path = REPO) -> list[str]:
    """Every call of execute/executemany/executescript outside muse_desktop/chat/store.py."""
    import ast

    found = []
    for root in ("muse_desktop", "converters"):
        for path in sorted((base / root).rglob("*.py")):
            if path.relative_to(base).as_posix() == "muse_desktop/chat/store.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("execute", "executemany", "executescript")):
                    found.append(f"{path.relative_to(base).as_posix()}:{node.lineno}")
    return found


def test_only_the_store_speaks_sql(tmp_path):
    """The store owns its tables: the rest of the app asks it, never the database."""
    assert sql_outside_the_store() == []
    root = copy_tree(tmp_path)
    module = root / "muse_desktop/evaluation/compare.py"
    module.write_text(module.read_text() + "\n\ndef f(store):\n    store.db.execute('SELECT 1')\n")
    assert [hit.split(":")[0] for hit in sql_outside_the_store(root)] == ["muse_desktop/evaluation/compare.py"]


def run_ruff(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=root,
                          capture_output=True, text=True)


def test_the_linter_finds_nothing():
    result = run_ruff(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_linter_catches_real_bugs(tmp_path):
    """The configured rules see an undefined name, a zip that would cut its longer input, and a
    closure over a loop variable."""
    root = copy_tree(tmp_path)
    (root / "muse_desktop" / "bugs.py").write_text(
        "def f(a, b):\n    return [x for x, y in zip(a, b)] + [lambda: x for x in a] + [undefined_name]\n")
    result = run_ruff(root)
    assert result.returncode != 0
    for rule in ("F821", "B905", "B023"):
        assert rule in result.stdout, result.stdout
