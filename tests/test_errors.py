"""One error family: every error the app raises on purpose is a MuseError, and the command
line and the window each handle the base once, showing the message and the advice."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

from muse_desktop.base.errors import MuseError

REPO = Path(__file__).resolve().parent.parent
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}
FLOW_CONTROL = {"Cancelled"}  # not an error: long work stopping because it was asked to


def exception_classes(base: Path = REPO, roots=("muse_desktop", "converters")) -> dict[str, list[str]]:
    """Every class that derives directly from a builtin exception: 'path:Class' -> its bases."""
    found = {}
    for root in roots:
        for path in sorted((base / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b) for b in node.bases]
                    if any(b in BUILTIN_EXCEPTIONS for b in bases):
                        found[f"{path.relative_to(base)}:{node.name}"] = bases
    return found


def outside_the_family(classes: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: bases for name, bases in classes.items()
            if "MuseError" not in bases and name.split(":")[1] not in FLOW_CONTROL | {"MuseError"}}


def test_every_error_class_is_in_the_family():
    classes = exception_classes()
    assert outside_the_family(classes) == {}
    assert len(classes) >= 15  # the scan finds them: the errors that were not a family


def test_the_scan_sees_an_error_outside_the_family(tmp_path):
    """Guards the guard: a new ValueError subclass without the base is found, one with it is not."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text("class Loose(ValueError):\n    pass\n\n\n"
                                           "class Kept(MuseError, ValueError):\n    pass\n")
    assert outside_the_family(exception_classes(tmp_path, ("pkg",))) == {"pkg/m.py:Loose": ["ValueError"]}


def test_old_catches_keep_working():
    from converters.errors import ConversionError
    from muse_desktop.models.download import DownloadError
    from muse_desktop.models.getmuse import AdapterRefused
    from muse_desktop.base.prompting import TemplateError
    from muse_desktop.training.config import ConfigError, TrainingError

    for error, builtin in ((ConversionError, ValueError), (ConfigError, ValueError), (TemplateError, ValueError),
                           (DownloadError, RuntimeError), (AdapterRefused, DownloadError),
                           (TrainingError, RuntimeError)):
        assert issubclass(error, MuseError) and issubclass(error, builtin)
    failed = TrainingError("The training process was killed by signal 9.", "crashed")
    assert (str(failed), failed.kind, failed.advice) == ("The training process was killed by signal 9.", "crashed", "")


def test_the_message_then_the_advice():
    error = MuseError("The model file is damaged.", advice="Download it again.")
    assert str(error) == "The model file is damaged."
    assert error.for_person() == "The model file is damaged.\nDownload it again."
    assert MuseError("Nothing to add.").for_person() == "Nothing to add."


def test_the_command_line_handles_the_base_once(monkeypatch, capsys):
    from muse_desktop import cli

    def refuse(args):
        raise MuseError("The dataset folder is empty.", advice="Put some .txt files in it.")

    monkeypatch.setattr(cli.chat, "_cmd_user_types", refuse)
    assert cli.main(["user-types"]) == 1
    assert capsys.readouterr().err == "muse-desktop: The dataset folder is empty.\nPut some .txt files in it.\n"

    def usage(args):
        raise cli.CliError("give a CONFIG.yaml")

    monkeypatch.setattr(cli.chat, "_cmd_user_types", usage)
    assert cli.main(["user-types"]) == 2
    assert capsys.readouterr().err == "muse-desktop: give a CONFIG.yaml\n"

    def fault(args):
        raise RuntimeError("a bug, not a message")

    monkeypatch.setattr(cli.chat, "_cmd_user_types", fault)
    with pytest.raises(RuntimeError, match="a bug"):  # a fault is not dressed up as a message
        cli.main(["user-types"])


def test_a_real_error_reaches_the_command_line_with_its_code(tmp_path, capsys):
    from muse_desktop.cli import main

    assert main(["kiosk", "train", str(tmp_path / "missing.jsonl")]) == 2  # a DatasetError
    assert "muse-desktop: " in capsys.readouterr().err


def test_the_window_handles_the_base_once(qtbot):
    from muse_desktop.ui.workers import EventWorker

    def work(token):
        yield from ()
        raise MuseError("The add-on does not fit this model.", advice="Choose the model it was made for.")

    worker = EventWorker(work)
    failed = []
    worker.failed.connect(failed.append)
    with qtbot.waitSignal(worker.finished, timeout=10_000):
        worker.start()
    worker.dispose()
    assert failed == ["The add-on does not fit this model.\nChoose the model it was made for."]
