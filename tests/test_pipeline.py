"""The one GGUF pipeline (converters.pipeline): build, its check, the one pass rule, the one free-space rule."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple

import pytest

from converters.errors import ConversionError
from muse_desktop.base.events import Done


def drain(events):
    """Run a generator to its end; its return value."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        assert not isinstance(event, Done)  # the stages' Done events are swallowed


def test_build_converts_quantizes_checks_with_both_files_then_names_and_drops_the_f16(tmp_path, tiny_model):
    from converters.gguf_check import inspect_gguf
    from converters.pipeline import build

    final = tmp_path / "out" / "model-Q8_0.gguf"
    seen = {}

    def check(built):
        seen["f16"] = inspect_gguf(built.f16).file_type
        seen["quantized"] = built.quantized.is_file() and built.quantized != final and not final.exists()
        return {"summary": "first line\nsecond line", "ok": 1}

    events = build(tiny_model, final, "q8_0", check=check)
    verification = drain(events)
    assert verification == {"checked": True, "summary": "first line\nsecond line", "ok": 1}
    assert seen == {"f16": 1, "quantized": True}  # F16 (file type 1) and the unnamed Q8_0 both existed
    assert os.listdir(final.parent) == [final.name]  # named; the F16 and the unnamed file are gone
    assert inspect_gguf(final).file_type == 7  # Q8_0


def test_a_failed_check_or_an_f16_result_leaves_only_what_is_kept(tmp_path, tiny_model):
    from converters.gguf_check import inspect_gguf
    from converters.pipeline import build

    final = tmp_path / "model-Q8_0.gguf"

    def refuse(built):
        raise ConversionError("does not match")

    with pytest.raises(ConversionError, match="does not match"):
        drain(build(tiny_model, final, "Q8_0", check=refuse))
    assert os.listdir(tmp_path) == []
    f16 = tmp_path / "model-F16.gguf"
    drain(build(tiny_model, f16, "F16"))
    assert os.listdir(tmp_path) == [f16.name] and inspect_gguf(f16).file_type == 1
    with pytest.raises(ConversionError, match="Unknown quantization type 'Q3'"):
        drain(build(tiny_model, tmp_path / "x.gguf", "q3"))


def test_the_one_pass_rule_refuses_a_file_from_another_model(tmp_path, tiny_model):
    pytest.importorskip("torch")
    from converters.convert import convert_model
    from converters.pipeline import NotVerified, verify_against_source
    from muse_desktop.models.demo_model import build_demo_model

    gguf = tmp_path / "tiny.gguf"
    list(convert_model(tiny_model, gguf, "f16"))
    report = verify_against_source(tiny_model, gguf)
    assert report.passed() and report.tolerance == 1e-2  # the F16 bar of converters.verify's table
    other = build_demo_model(tmp_path / "other", seed=7, tokenizer_model=tiny_model / "tokenizer.model")
    with pytest.raises(NotVerified, match="does not match the original.*relative logit error.*nothing was kept"):
        verify_against_source(other, gguf)


def test_one_free_space_rule_for_downloads_and_conversions(tmp_path, monkeypatch):
    from converters.gguf_out import check_free_space as conversion_check
    from muse_desktop.models.download import DownloadError
    from muse_desktop.models.download import check_free_space as download_check
    from muse_desktop.base.fileio import DISK_MARGIN

    usage = namedtuple("usage", "total used free")
    needed = 10 << 20
    # More than the old converters' 64 MiB margin, less than the rule's: both refuse now.
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**12, 0, needed + (100 << 20)))
    with pytest.raises(ConversionError, match="Not enough free disk space.*nothing was lost"):
        conversion_check(tmp_path / "out.gguf", needed)
    with pytest.raises(DownloadError, match="Not enough free disk space.*nothing was lost"):
        download_check(tmp_path, needed)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**12, 0, needed + DISK_MARGIN))
    conversion_check(tmp_path / "out.gguf", needed)
    download_check(tmp_path, needed)


def test_the_command_line_offers_the_pipelines_own_tables():
    from converters.pipeline import OUTTYPES, QUANT_TYPES
    from muse_desktop.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command" or getattr(a, "choices", None)
                    and "convert" in (a.choices or {}))
    choices = {name: {tuple(a.choices) for a in sub._actions if a.dest in ("outtype", "type") and a.choices}
               for name, sub in commands.choices.items()}
    assert choices["convert"] == {OUTTYPES} and choices["convert-adapter"] == {OUTTYPES}
    assert choices["quantize"] == {QUANT_TYPES}
