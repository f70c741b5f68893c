"""Shared fixtures: an isolated user folder for every test, and the tiny Phi-3 models."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from muse_desktop.demo_model import Variant, build_demo_model, train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own MUSE_HOME, so nothing touches the real user folders."""
    home = tmp_path / "muse-home"
    monkeypatch.setenv("MUSE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_sp_model(tmp_path_factory) -> Path:
    """The sentencepiece model, trained once per session on the repo's text."""
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_sp_model) -> dict[str, Path]:
    """All three tiny Phi-3 variants, sharing one tokenizer."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        variant: build_demo_model(root / variant, variant, tokenizer_model=tiny_sp_model)
        for variant in Variant.ALL
    }


@pytest.fixture(scope="session")
def tiny_model(tiny_models) -> Path:
    return tiny_models[Variant.MINI_4K]


@pytest.fixture(scope="session")
def hf_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))
