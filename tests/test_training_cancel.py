"""Cancel saves a checkpoint on every OS: the child is asked with a message it polls, never sent a signal."""

from __future__ import annotations

import subprocess

import pytest

from muse_desktop.base.events import CancelToken, Progress
from test_training import tiny_config, write_triples


def test_cancel_asks_the_child_without_a_signal_and_it_checkpoints(tmp_path, tiny_model, monkeypatch):
    from muse_desktop.training.child import run_training
    from muse_desktop.training.config import TrainingError
    from muse_desktop.training.runfolder import RunFolder
    from muse_desktop.training.recipe import latest_checkpoint

    signals = []
    # On Windows terminate() is TerminateProcess: a hard kill that saves nothing. Cancel must not need it.
    for name in ("terminate", "send_signal", "kill"):
        monkeypatch.setattr(subprocess.Popen, name, lambda self, *a, n=name: signals.append(n))
    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), max_steps=400, save_steps=1000)
    run = tmp_path / "run"
    token = CancelToken()
    with pytest.raises(TrainingError) as stopped:
        for event in run_training(config, run, token):
            if isinstance(event, Progress) and event.done >= 3:
                token.cancel()
    assert stopped.value.kind == "cancelled" and signals == []
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None and 3 <= int(checkpoint.name.split("-")[1]) < 400  # saved on cancel, not by save_steps
    assert not RunFolder(run).cancel_requested()  # a later Resume is not cancelled by it
