"""The muse-desktop command, called in-process and through the installed entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from muse_desktop import __version__
from muse_desktop.cli import main


def installed_command() -> str:
    path = Path(sys.executable).parent / "muse-desktop"
    found = shutil.which("muse-desktop", path=str(path.parent)) or shutil.which("muse-desktop")
    assert found, "the muse-desktop entry point is not installed"
    return found


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"MUsE Desktop {__version__}"


def test_user_types_search_nurse_lists_matches(capsys):
    assert main(["user-types", "--search", "nurse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nurse ") and "Nurse" in lines[0]
    assert any(line.startswith("veterinary-nurse ") for line in lines)
    assert len(lines) == 2


def test_user_types_lists_the_whole_catalog(capsys):
    assert main(["user-types"]) == 0
    assert len(capsys.readouterr().out.splitlines()) >= 373


def test_user_types_group_and_limit(capsys):
    assert main(["user-types", "--group", "transport", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("[Transport and logistics]" in line for line in lines)


def test_no_match_says_so_and_fails(capsys):
    assert main(["user-types", "--search", "xyzzy"]) == 1
    assert "No user type matches 'xyzzy'" in capsys.readouterr().out


def test_installed_entry_point_runs_headless():
    command = installed_command()
    out = subprocess.run([command, "user-types", "--search", "flight att"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("flight-attendant ") and "Flight Attendant" in out.stdout
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    assert __version__ in version.stdout


def test_unknown_command_fails_with_usage():
    command = installed_command()
    result = subprocess.run([command, "fly-to-the-moon"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_demo_model_command_builds_a_checkpoint(tmp_path, capsys):
    assert main(["demo-model", str(tmp_path / "demo"), "--variant", "gqa"]) == 0
    assert "random weights" in capsys.readouterr().out
    assert (tmp_path / "demo" / "config.json").is_file()
    assert list((tmp_path / "demo").glob("*.safetensors"))


def test_convert_quantize_and_adapter_commands(tiny_model, adapters, tmp_path):
    command = installed_command()
    out = tmp_path / "m.gguf"
    result = subprocess.run([command, "convert", str(tiny_model), str(out), "--outtype", "f32", "--verify"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"Converted model written to {out}" in result.stdout
    assert "Verify:" in result.stdout and "top-1 agreement 100.0%" in result.stdout
    assert "15/15 tensors" in result.stderr  # plain progress lines when not on a terminal
    quantized = tmp_path / "m-q4.gguf"
    result = subprocess.run([command, "quantize", str(out), str(quantized), "--type", "q4_k_m", "--threads", "2"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and quantized.exists(), result.stderr
    assert "Checked: Q4_K_M against F32 on" in result.stdout and "mean KL divergence" in result.stdout
    lora = tmp_path / "a.gguf"
    result = subprocess.run([command, "convert-adapter", str(adapters["all"]), str(lora), "--base", str(tiny_model)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and lora.exists(), result.stderr


@pytest.mark.parametrize(
    "args, reason",
    [
        (["convert", "{missing}", "{out}"], "No config.json in"),
        (["quantize", "{model}/config.json", "{out}"], "config.json is not a GGUF model file"),
        (["convert-adapter", "{model}", "{out}", "--base", "{model}"], "No adapter_config.json in"),
    ],
)
def test_failures_are_one_line_without_traceback(tiny_model, tmp_path, args, reason):
    values = {"missing": str(tmp_path / "nothing"), "out": str(tmp_path / "o.gguf"), "model": str(tiny_model)}
    result = subprocess.run([installed_command(), *(a.format(**values) for a in args)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("muse-desktop:")]
    assert len(lines) == 1 and reason in lines[0]
    assert not (tmp_path / "o.gguf").exists()


def test_chat_prompt_only_prints_the_exact_muse_prompt():
    result = subprocess.run([installed_command(), "chat", "--model", "unused.gguf", "--user-type", "older-adult",
                             "--prompt-only", "Why is a balanced diet important?"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "<|user|>You should adaptively use proper words and sentences to make Elderly understand. "
        "Please include contexts familiar with Elderly\nWhy is a balanced diet important?<|end|>\n<|assistant|>\n"
    )


def test_chat_answers_headless(tiny_gguf, adapters, tiny_model, tmp_path):
    from converters.convert import convert_adapter
    from muse_desktop.models.demo_model import Variant

    lora = tmp_path / "a.gguf"
    for _ in convert_adapter(adapters["all"], lora, tiny_model):
        pass
    command = [installed_command(), "chat", "--model", str(tiny_gguf[Variant.MINI_4K]), "--user-type", "Nurse",
               "--max-tokens", "12", "--seed", "3", "--threads", "2", "--context", "512"]
    first = subprocess.run([*command, "What is a fever?"], capture_output=True, text=True)
    again = subprocess.run([*command, "What is a fever?"], capture_output=True, text=True)
    tuned = subprocess.run([*command, "--adapter", f"{lora}:1.0", "What is a fever?"], capture_output=True, text=True)
    assert first.returncode == again.returncode == tuned.returncode == 0, first.stderr + tuned.stderr
    assert first.stdout.strip() and first.stdout == again.stdout != tuned.stdout
    assert "<|" not in first.stdout


def test_chat_with_a_bad_model_fails_in_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    result = subprocess.run([installed_command(), "chat", "--model", str(bad), "hi"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("muse-desktop: broken.gguf is damaged or truncated")
    custom = subprocess.run([installed_command(), "chat", "--model", str(bad), "--user-type", "x\x07", "hi"],
                            capture_output=True, text=True)
    assert custom.returncode == 2 and "control characters" in custom.stderr


def test_self_test_checks_everything_and_reports_each_line(capsys, tmp_path, monkeypatch):
    import tempfile

    from muse_desktop.cli import main

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    assert main(["--self-test"]) == 0
    out = capsys.readouterr().out
    for name in ("resources", "database", "chat", "quantizer", "trainer", "contents"):
        assert f"OK   {name}:" in out
    assert out.strip().endswith("PASSED")
    assert list(temp.iterdir()) == []  # the demo model, the Q8_0 copy and the training run are gone


def test_self_test_fails_with_a_reason_for_a_bad_model(tmp_path, capsys):
    from muse_desktop.cli import main

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    assert main(["--self-test", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL chat:" in out and "bad.gguf" in out and out.strip().endswith("FAILED")


def test_run_module_only_starts_the_child_modules(capsys):
    from muse_desktop.cli import main
    from muse_desktop.base.process import module_command

    assert main(["--run-module", "os"]) == 2
    assert "takes one of" in capsys.readouterr().err
    with pytest.raises(ValueError):
        module_command("shutil")


def test_each_domain_holds_its_parsers_beside_their_handlers():
    """Every command is registered by the domain module whose function handles it."""
    import argparse

    from muse_desktop import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    where = {name: sub.get_default("func").__module__ for name, sub in commands.choices.items()}
    assert where == {
        "user-types": "muse_desktop.cli.chat", "chat": "muse_desktop.cli.chat",
        "demo-model": "muse_desktop.cli.models", "convert": "muse_desktop.cli.models",
        "convert-adapter": "muse_desktop.cli.models", "quantize": "muse_desktop.cli.models",
        "get-muse": "muse_desktop.cli.models",
        "train": "muse_desktop.cli.training", "export": "muse_desktop.cli.training",
        "get-dataset": "muse_desktop.cli.data", "build-data": "muse_desktop.cli.data",
        "augment": "muse_desktop.cli.data", "preferences": "muse_desktop.cli.data",
        "lock": "muse_desktop.cli.household", "kiosk": "muse_desktop.cli.household",
        "people": "muse_desktop.cli.household",
    }
    for domain in cli.DOMAINS:  # and each registers only its own: add_parsers sits in the same module
        sub = argparse.ArgumentParser().add_subparsers()
        domain.add_parsers(sub)
        assert {p.get_default("func").__module__ for p in sub.choices.values()} == {domain.__name__}
