"""DPO has the recipe's checkpoints and exact resume, and follows its schedule options."""

from __future__ import annotations

import pytest

from muse_desktop.base.events import CancelToken, Log, Metric, Progress
from muse_desktop.evaluation.preferences import export_pairs
from muse_desktop.chat.store import Store
from test_preferences import record_all
from test_training import adapter_tensors


@pytest.fixture
def pairs(tmp_path, isolated_home):
    store = Store()
    record_all(store)
    export_pairs(store, tmp_path / "pairs.jsonl")
    store.close()
    return tmp_path / "pairs.jsonl"


def dpo_config(tiny_model, pairs, **overrides):
    from muse_desktop.training.config import config_from_dict

    options = {"preset": "muse-3", "base_model": str(tiny_model), "dpo_pairs": str(pairs), "lora_r": 8,
               "lora_alpha": 16, "lora_dropout": 0.1, "learning_rate": 5e-3, "batch_size": 2, "max_steps": 12,
               "dpo_beta": 0.1, "gradient_accumulation": 2, "warmup_steps": 3, "scheduler": "linear",
               "save_steps": 4, "seed": 3}
    options.update(overrides)
    return config_from_dict(options)


def test_a_cancelled_dpo_run_resumes_to_the_same_adapter_with_the_schedule(tmp_path, tiny_model, pairs):
    import torch

    from muse_desktop.training.dpo import train_dpo
    from muse_desktop.training.recipe import TrainingError, latest_checkpoint, lr_at

    config = dpo_config(tiny_model, pairs)
    straight = list(train_dpo(config, tmp_path / "straight"))
    rates = [e.value for e in straight if isinstance(e, Metric) and e.name == "learning_rate"]
    assert rates == pytest.approx([lr_at(config, step, 12) for step in range(12)])  # warmup, then linear decay
    assert rates[0] < rates[2] and rates[-1] < rates[3]

    run = tmp_path / "interrupted"
    token = CancelToken()
    with pytest.raises(TrainingError) as stopped:
        for event in train_dpo(config, run, token):
            if isinstance(event, Progress) and event.done >= 6:
                token.cancel()  # between checkpoints: the cancel itself saves one
    assert stopped.value.kind == "cancelled"
    assert latest_checkpoint(run).name == "step-0000006"
    resumed = list(train_dpo(config, run))
    steps = [e.done for e in resumed if isinstance(e, Progress)]
    assert steps[0] == 7 and steps[-1] == 12
    assert any(isinstance(e, Log) and "Resuming from step-0000006" in e.message for e in resumed)
    a, b = adapter_tensors(tmp_path / "straight"), adapter_tensors(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # exact, dropout and all
    assert resumed[-1].data["margin_start"] == straight[-1].data["margin_start"]


def test_dpo_leaves_out_pairs_longer_than_seq_len(tmp_path, tiny_model, pairs):
    from muse_desktop.training.dpo import encode_pair, train_dpo
    from muse_desktop.evaluation.preferences import read_pairs
    from muse_desktop.base.prompting.hf import HFTokenizer
    from transformers import AutoTokenizer

    tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(str(tiny_model)))
    lengths = sorted(max(len(c[0]), len(r[0])) for c, r in (encode_pair(p, tokenizer, None) for p in read_pairs(pairs)))
    cutoff = lengths[1]  # two pairs fit, two do not
    if lengths[2] == cutoff:
        pytest.skip("the pairs happen to have equal lengths")
    events = list(train_dpo(dpo_config(tiny_model, pairs, seq_len=cutoff, max_steps=2, save_steps=0), tmp_path / "r"))
    assert any(isinstance(e, Log) and "longer than seq_len" in e.message for e in events)
    assert events[-1].data["pairs"] == 2 and events[-1].data["pairs_too_long"] == 2
