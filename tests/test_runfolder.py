"""A training run's folder: its one stored config, its states, and the Trainer page's core work (no Qt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from muse_desktop.base.paths import resources_dir
from muse_desktop.training.config import config_from_dict
from muse_desktop.training.runfolder import NotARun, RunFolder, RunState
from test_training import tiny_config, write_triples


@pytest.fixture
def own_preset(tmp_path, monkeypatch):
    """A copy of the shipped resources with a preset of our own, which a test may change or remove."""
    resources = tmp_path / "resources"
    shutil.copytree(resources_dir(), resources)
    preset = resources / "presets" / "mine.yaml"
    preset.write_text("description: ours\nlora_r: 8\nlora_alpha: 16\nlearning_rate: 5e-3\nlora_dropout: 0.1\n"
                      "target_modules: [qkv_proj, o_proj]\n")
    monkeypatch.setenv("MUSE_RESOURCES", str(resources))  # the child process sees it too
    return preset


def test_the_resolved_config_is_stored_once_and_read_back_without_its_preset(tmp_path, own_preset):
    config = config_from_dict({"preset": "mine", "base_model": "b", "dataset": "d.jsonl"})
    run = RunFolder.create(tmp_path / "run", config)
    own_preset.write_text("lora_r: 99\nlearning_rate: 1.0\n")  # changed after the run was made
    assert run.config() == config
    own_preset.unlink()  # and then removed
    again = RunFolder.open(tmp_path / "run").config()
    assert again == config and again.lora_r == 8 and again.target_modules == ["qkv_proj", "o_proj"]
    assert again.preset == "mine"  # the name it was made from, kept as a label
    assert [p.name for p in run.path.iterdir()] == ["config.json"]  # stored once, nowhere else


def test_a_bad_config_is_refused_before_a_folder_is_made(tmp_path):
    config = config_from_dict({"base_model": "b", "dataset": "d", "batch_size": 0})
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        RunFolder.create(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()
    with pytest.raises(NotARun, match="is not a training run"):
        RunFolder.open(tmp_path)


def test_the_states_of_a_run(tmp_path):
    config = config_from_dict({"base_model": "b", "dataset": "d"})
    run = RunFolder.create(tmp_path / "run", config)
    assert run.state == RunState.CREATED and not run.resumable
    assert run.describe() == "not started or stopped before its first checkpoint"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run.mark(RunState.RUNNING, pid=child.pid)
        assert run.state == RunState.RUNNING and not run.resumable and run.describe() == "training now"
    finally:
        child.kill()
        child.wait()
    # Its process is gone without a word (killed, or the app closed): failed, and resumable once it has a checkpoint.
    assert run.state == RunState.FAILED and not run.resumable
    (run.checkpoints / "step-0000004").mkdir(parents=True)
    (run.checkpoints / "step-0000008.tmp").mkdir()  # half written: not a checkpoint
    assert run.resumable and run.describe() == "stopped after step 4; can be resumed"
    run.mark(RunState.CANCELLED, "cancelled", "stopped")
    assert run.state == RunState.CANCELLED and run.resumable
    run.mark(RunState.FINISHED)
    assert run.state == RunState.FAILED  # it says finished, but there is no adapter
    run.adapter.mkdir()
    (run.adapter / "adapter_config.json").write_text("{}")
    run.write_results({"steps": 8, "final_train_loss": 0.25, "best_val_loss": None, "tokens": 1200, "seconds": 3})
    assert run.state == RunState.FINISHED and not run.resumable
    assert run.describe() == "finished, 8 steps, loss 0.250"
    details = run.details()
    assert "Settings: " in details and "base_model b" in details and "1,200 tokens in 3 s" in details
    with pytest.raises(ValueError):
        run.mark("paused")


def test_a_run_made_before_the_run_folder_still_opens(tmp_path):
    config = config_from_dict({"preset": "muse-3", "base_model": "b", "dataset": "d"})
    old = tmp_path / "old"
    old.mkdir()
    (old / "request.json").write_text(json.dumps(config.to_dict()))
    (old / "checkpoints" / "step-0000010").mkdir(parents=True)
    run = RunFolder.open(old)
    assert run.config() == config and run.resumable


def test_a_run_whose_preset_was_removed_resumes_to_the_same_adapter(tmp_path, tiny_model, own_preset):
    import torch
    from safetensors.torch import load_file

    from muse_desktop.base.events import CancelToken, Progress
    from muse_desktop.training.child import run_training
    from muse_desktop.training.config import TrainingError

    data = write_triples(tmp_path / "d.jsonl")
    # Dropout on, so that a resume that lost the random state (or took other settings) would differ.
    # Room after the cancel: the child runs on while the parent reads its progress (16 steps could all be done).
    config = tiny_config(tiny_model, data, preset="mine", lora_dropout=0.1, max_steps=120, save_steps=4, batch_size=1)
    assert config.preset == "mine" and config.target_modules == ["qkv_proj", "o_proj"]  # from our preset
    list(run_training(config, tmp_path / "straight"))
    token = CancelToken()
    with pytest.raises(TrainingError):
        for event in run_training(config, tmp_path / "run", token):
            if isinstance(event, Progress) and event.done >= 6:
                token.cancel()
    run = RunFolder(tmp_path / "run")
    assert run.state == RunState.CANCELLED and run.resumable
    own_preset.write_text("lora_dropout: 0.0\nlora_r: 4\n")
    os.replace(own_preset, own_preset.with_suffix(".gone"))
    list(run_training(None, run.path))
    assert run.state == RunState.FINISHED
    straight = load_file(RunFolder(tmp_path / "straight").adapter / "adapter_model.safetensors")
    resumed = load_file(run.adapter / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


# --- the Trainer page's core work -----------------------------------------------------------------


def test_the_layer_choice_as_a_box_shows_it():
    from muse_desktop.training.plan import last_layers_chosen, last_layers_shown

    assert last_layers_shown("half") == 0 and last_layers_shown(6) == 6
    assert last_layers_chosen(0, "half") == "half"  # left alone: the preset's own "half"
    assert last_layers_chosen(4, "half") == 4 and last_layers_chosen(0, 0) == 0 and last_layers_chosen(3, 0) == 3
    config = config_from_dict({"preset": "muse-3", "base_model": "b", "dataset": "d",
                               "train_last_layers": last_layers_chosen(0, "half")}).validate()
    assert config.train_last_layers == "half"
    assert config.trained_layers(32) == 16 and config.trained_layers(5) == 3  # the one place "half" is worked out
    config.train_last_layers = 40
    assert config.trained_layers(32) == 32
    config.train_last_layers = 0
    assert config.trained_layers(32) == 32


def test_the_dataset_check_counts_tokens_and_estimates_the_time(tmp_path, tiny_model):
    from muse_desktop.training.plan import dataset_report

    data = write_triples(tmp_path / "d.jsonl")
    with open(data, "a") as handle:
        handle.write("{broken\n")
    config = tiny_config(tiny_model, data)
    without = dataset_report(str(data), "", "", config)
    assert "6 usable, 1 skipped" in without and "line 7: invalid JSON" in without
    assert "Choose the base model to count tokens" in without
    report = dataset_report(str(data), "", str(tiny_model), config)
    assert "One pass over the data takes" in report and "Choose the base model" not in report


def test_a_dpo_run_is_made_with_its_pairs_in_place_and_no_placeholder(tmp_path, isolated_home):
    from muse_desktop.evaluation.preferences import read_pairs
    from muse_desktop.chat.store import Store
    from muse_desktop.training.plan import dpo_run

    store = Store()
    settings = {"preset": "muse-3", "base_model": "b", "dataset": "ignored.jsonl", "lora_r": 8}
    try:
        with pytest.raises(ValueError, match="No preferences yet"):
            dpo_run(settings, store, tmp_path / "none")
        assert not (tmp_path / "none").exists()
        store.add_preference("Child", [], "Why is the sky blue?", [{"text": "Light."}, {"text": "Because."},
                                                                    {"text": "Air."}, {"text": "No."}],
                             best=0, worst=3)
        run, count = dpo_run(settings, store, tmp_path / "dpo")
    finally:
        store.close()
    config = RunFolder.open(run.path).config()
    assert count == 1 and config.dpo_pairs == str(run.pairs_path) and config.dataset == ""
    assert config.name == "dpo" and config.lora_r == 8
    assert read_pairs(config.dpo_pairs)[0]["chosen"] == "Light."
    assert run.state == RunState.CREATED
