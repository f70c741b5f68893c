"""Shared fixtures: an isolated user folder for every test, and the tiny Phi-3 models."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import make_peft_adapter, museum_questions  # noqa: E402

from muse_desktop.models.demo_model import Variant, build_demo_model, train_tokenizer  # noqa: E402



@pytest.fixture(scope="session", autouse=True)
def real_user_folders_untouched():
    """No test may write into the real per-user folders (every test has its own MUSE_HOME)."""
    import platformdirs

    from muse_desktop import APP_ID

    dirs = platformdirs.PlatformDirs(appname=APP_ID, appauthor=False)
    folders = [Path(dirs.user_data_dir), Path(dirs.user_config_dir)]
    before = {f: f.exists() for f in folders}
    yield
    created = [str(f) for f in folders if f.exists() and not before[f]]
    assert not created, f"tests wrote into the real user folders: {created}"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own MUSE_HOME, so nothing touches the real user folders."""
    home = tmp_path / "muse-home"
    monkeypatch.setenv("MUSE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def museum_guard():
    """The kiosk's scope guard trained once on the museum questions (the report: guard and metrics)."""
    from muse_desktop.household.scope import train_scope_guard

    return train_scope_guard(museum_questions(), topic="ancient Egypt")


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


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """Adapters covering the merge rules: all four modules, rsLoRA, per-module ranks/alphas, some layers."""
    root = tmp_path_factory.mktemp("adapters")
    return {
        "all": make_peft_adapter(tiny_model, root / "all"),
        "rslora": make_peft_adapter(tiny_model, root / "rslora", seed=1, use_rslora=True, r=4, lora_alpha=8),
        "patterns": make_peft_adapter(
            tiny_model,
            root / "patterns",
            seed=2,
            rank_pattern={"qkv_proj": 4, "down_proj": 2},
            alpha_pattern={"o_proj": 32, "layers.1.mlp.gate_up_proj": 4},
        ),
        "layer1": make_peft_adapter(tiny_model, root / "layer1", seed=3, layers_to_transform=[1], target_modules=["qkv_proj", "down_proj"]),
    }


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_models) -> dict[str, Path]:
    """Each tiny variant converted to an F32 GGUF."""
    from converters.convert import convert_model

    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for variant, path in tiny_models.items():
        target = root / f"{variant}-f32.gguf"
        for _ in convert_model(path, target, "f32"):
            pass
        out[variant] = target
    return out
