"""Training never unpickles: a base folder with only .bin weights is refused, and its code never runs."""

from __future__ import annotations

import pickle
import shutil

import pytest


class RunsCode:
    """A pickle that, when loaded, leaves a file behind: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_base_model_with_only_pickled_weights_is_refused_without_running_it(tmp_path, tiny_model):
    import torch

    from muse_desktop.training.recipe import TrainingError, load_model
    from test_training import tiny_config, write_triples

    base = tmp_path / "base"
    shutil.copytree(tiny_model, base)
    for weights in base.glob("*.safetensors*"):  # the weights and their index
        weights.unlink()
    marker = tmp_path / "code-ran"
    (base / "pytorch_model.bin").write_bytes(pickle.dumps(RunsCode(marker)))
    config = tiny_config(base, write_triples(tmp_path / "d.jsonl"))
    with pytest.raises(TrainingError, match="only pytorch_model.bin: pickle files"):
        load_model(config, torch.device("cpu"), torch.float32)
    assert not marker.exists()


def test_the_training_extra_needs_a_torch_whose_safe_loading_holds():
    import tomllib
    from pathlib import Path

    from packaging.version import Version

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    wanted = [d for d in project["project"]["optional-dependencies"]["train"] if d.startswith("torch")]
    assert wanted and Version(wanted[0].split(">=")[1].split(",")[0].strip()) >= Version("2.6")
