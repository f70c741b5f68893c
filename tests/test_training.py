"""The trainer on the tiny model: presets, dataset checks, LoRA/QLoRA learning, exact resume, export to chat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from muse_desktop.data.datasets import DatasetError, Format, detect_format, load_dataset
from muse_desktop.base.events import Done, Metric, Progress
from muse_desktop.training.config import ConfigError, config_from_dict, load_config, load_preset, preset_names

FACTS = [
    ("Child", "What colour is the sky?", "The sky is blue on a sunny day."),
    ("Elderly", "How do I call my grandson?", "Press the green phone button, then his name."),
    ("Farmer", "When should I plant potatoes?", "Plant them in spring when the soil is warm."),
    ("Nurse", "What is a normal pulse?", "Between sixty and one hundred beats a minute."),
    ("Child", "Why do cats purr?", "Cats purr when they feel happy and safe."),
    ("Teenager", "How can I sleep better?", "Put the phone away an hour before bed."),
]


def write_triples(path: Path, rows=FACTS) -> Path:
    path.write_text("".join(json.dumps({"user_type": u, "question": q, "answer": a}) + "\n" for u, q, a in rows))
    return path


def tiny_config(base, dataset, **overrides):
    options = {"preset": "muse-3", "base_model": str(base), "dataset": str(dataset), "lora_r": 8, "lora_alpha": 16,
               "lora_dropout": 0.0, "learning_rate": 5e-3, "batch_size": 2, "max_steps": 40,
               "validation_split": 0.0, "save_steps": 10, "eval_questions": 0, "seed": 1}
    options.update(overrides)
    return config_from_dict(options)


def losses(events, name="train_loss"):
    return [e.value for e in events if isinstance(e, Metric) and e.name == name]


# --- presets and configs -----------------------------------------------------------------


def test_every_preset_loads_with_the_research_settings():
    assert preset_names() == ["muse-1", "muse-2", "muse-3", "qlora"]
    for name in preset_names():
        preset = load_preset(name)
        assert preset.description and preset.preset == name
        config_from_dict({"preset": name, "base_model": "b", "dataset": "d.jsonl"}).validate()
    muse = {name: load_preset(name) for name in ("muse-1", "muse-2", "muse-3")}
    assert muse["muse-1"].target_modules == ["qkv_proj", "o_proj"]
    assert muse["muse-2"].target_modules == ["gate_up_proj", "down_proj"]
    assert set(muse["muse-3"].target_modules) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    for preset in muse.values():
        assert (preset.lora_r, preset.lora_alpha, preset.lora_dropout) == (64, 64, 0.05)
        assert (preset.learning_rate, preset.min_learning_rate, preset.batch_size) == (1e-4, 1e-6, 3)
        assert preset.scheduler == "cosine" and preset.optimizer == "adamw" and preset.train_on == "assistant"
    qlora = load_preset("qlora")
    assert (qlora.method, qlora.lora_r, qlora.lora_alpha, qlora.lora_dropout) == ("qlora", 64, 16, 0.1)
    assert qlora.optimizer == "paged_adamw_8bit" and qlora.train_last_layers == "half"


def test_a_config_file_builds_on_its_preset_and_refuses_typos(tmp_path):
    (tmp_path / "mine.yaml").write_text("preset: muse-1\nbase_model: base\ndataset: data/x.jsonl\nepochs: 2\n")
    config = load_config(tmp_path / "mine.yaml")
    assert config.target_modules == ["qkv_proj", "o_proj"] and config.epochs == 2.0
    assert config.dataset == str(tmp_path / "data" / "x.jsonl")  # relative to the config file
    (tmp_path / "typo.yaml").write_text("preset: muse-3\nbase_model: b\ndataset: d\nlearning_rat: 1e-3\n")
    with pytest.raises(ConfigError, match="Did you mean 'learning_rate'"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "bad.yaml").write_text("base_model: b\ndataset: d\noptimizer: sgd\nbatch_size: 0\n")
    with pytest.raises(ConfigError, match="optimizer must be one of.*batch_size must be at least 1"):
        load_config(tmp_path / "bad.yaml")


# --- datasets ---------------------------------------------------------------------------------


def test_every_kind_of_bad_row_is_reported_with_its_line(tmp_path, hf_tokenizer):
    from muse_desktop.base.prompting.hf import HFTokenizer

    lines = [
        json.dumps({"user_type": "Child", "question": "Why is grass green?", "answer": "Because of chlorophyll."}),
        '{"user_type": "Child", "question": "broken", ',
        json.dumps({"user_type": "Child", "answer": "No question here."}),
        json.dumps({"user_type": "Child", "question": "   ", "answer": "Empty question."}),
        json.dumps({"user_type": "Child", "question": "Long?", "answer": "word " * 400}),
        json.dumps({"user_type": "Space pirate", "question": "Where is the treasure?", "answer": "Under the tree."}),
        "",
        json.dumps({"user_type": "Child", "question": "Why is grass green?", "answer": "Because of chlorophyll."}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"user_type": "Child", "question": 42, "answer": "A number is not a question."}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = load_dataset(path, tokenizer=HFTokenizer(hf_tokenizer), cutoff=256)
    found = {p.line: (p.level, p.reason) for p in report.problems}
    assert found[2][1].startswith("invalid JSON")
    assert found[3][1] == "missing field 'question'"
    assert found[4][1] == "empty field 'question'"
    assert found[5][1].startswith("longer than the cutoff (") and "> 256)" in found[5][1]
    assert found[6] == ("warning", "unknown user type 'Space pirate'")
    assert found[8][1] == "duplicate of line 1"
    assert found[9][1] == "not a JSON object"
    assert found[10][1] == "field 'question' is not text"
    assert [e.line for e in report.examples] == [1, 6]
    assert report.skipped == 7 and report.warnings == 1 and report.rows == 9
    assert report.tokens > report.trained_tokens > 0
    assert "2 usable, 7 skipped, 1 warnings" in report.summary()


def test_formats_are_detected_and_read(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text('user_type,question,answer\nChild,"Why, why?","Because."\nNurse,,Missing\n')
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text(json.dumps({"instruction": "Add", "input": "2+2", "output": "4"}) + "\n")
    chats = tmp_path / "c.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "system", "content": "Be kind"},
                                              {"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Hello!"}]}) + "\n"
                     + json.dumps({"conversations": [{"from": "human", "value": "Hi"}]}) + "\n")
    text = tmp_path / "notes.txt"
    text.write_text("First paragraph\nstill first.\n\nSecond one.\n")
    assert [detect_format(p) for p in (csv_path, alpaca, chats, text)] == [
        Format.MUSE, Format.ALPACA, Format.MESSAGES, Format.TEXT]
    report = load_dataset(csv_path)
    assert report.examples[0].turns[0].content == "Why, why?" and report.problems[0].line == 3
    assert load_dataset(alpaca).examples[0].turns[0].content == "Add\n2+2"
    chat_report = load_dataset(chats)
    assert len(chat_report.examples) == 1 and chat_report.examples[0].user_type is None
    assert chat_report.problems[0].line == 2 and "end with an assistant" in chat_report.problems[0].reason
    assert [e.text for e in load_dataset(text).examples] == ["First paragraph\nstill first.", "Second one."]
    empty = tmp_path / "e.jsonl"
    empty.write_text("{broken\n")
    with pytest.raises(DatasetError, match="no usable rows"):
        load_dataset(empty, Format.MUSE).require_examples()
    (tmp_path / "odd.jsonl").write_text(json.dumps({"foo": 1}) + "\n")
    with pytest.raises(DatasetError, match="Choose the format by hand"):
        detect_format(tmp_path / "odd.jsonl")


def test_training_ids_are_the_prompt_contract_ids(tmp_path, tiny_model, hf_tokenizer):
    """The trainer tokenizes through the same contract the chat engine uses (answer + <|end|> trained)."""
    from muse_desktop.base.prompting import Turn, build_pieces, encode
    from muse_desktop.base.prompting.hf import HFTokenizer
    from muse_desktop.training.recipe import prepare_data

    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl", FACTS[:1]))
    data = prepare_data(config, hf_tokenizer)
    user, question, answer = FACTS[0]
    expected = encode(build_pieces(user, [Turn("user", question), Turn("assistant", answer)]), HFTokenizer(hf_tokenizer))
    assert data.train == [(expected.input_ids, expected.labels)]
    trained = [t for t in expected.labels if t != -100]
    assert hf_tokenizer.decode(trained) == answer + "<|end|>"


# --- learning ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_lora_and_qlora_halve_the_training_loss(tmp_path, tiny_model, method):
    from muse_desktop.training.recipe import train

    overrides = {"max_steps": 60}
    if method == "qlora":
        overrides.update(preset="qlora", optimizer="paged_adamw_8bit", gradient_accumulation=1, lora_alpha=16,
                         max_grad_norm=1.0, learning_rate=1e-2, early_stopping_patience=0, epochs=1)
    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), **overrides)
    events = list(train(config, tmp_path / "run"))
    curve = losses(events)
    assert len(curve) == 60
    first, last = sum(curve[:3]) / 3, sum(curve[-5:]) / 5
    assert last < first / 2, (method, first, last)
    assert isinstance(events[-1], Done) and (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    if method == "qlora":
        assert any("4-bit NF4" in getattr(e, "message", "") for e in events)
        # The preset freezes the first half of the layers: the adapter only has the last half.
        keys = adapter_tensors(tmp_path / "run").keys()
        assert keys and all(".layers.1." in k for k in keys), sorted(keys)[:4]


def test_a_nan_loss_stops_the_run_with_a_message(tmp_path, tiny_model):
    from muse_desktop.training.recipe import TrainingError, train

    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), learning_rate=1e30, max_grad_norm=0.0)
    with pytest.raises(TrainingError, match="learning rate may be too high") as failure:
        list(train(config, tmp_path / "run"))
    assert failure.value.kind == "nan"


def test_out_of_memory_ends_with_advice_and_keeps_the_checkpoint(tmp_path, tiny_model, monkeypatch):
    import torch

    from muse_desktop.training import recipe

    original = recipe.collate
    calls = {"n": 0}

    def exhausted(*args, **kwargs):  # the fifth batch does not fit
        calls["n"] += 1
        if calls["n"] == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(recipe, "collate", exhausted)
    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), save_steps=2)
    with pytest.raises(recipe.TrainingError, match="smaller batch_size.*QLoRA") as failure:
        list(recipe.train(config, tmp_path / "run"))
    assert failure.value.kind == "out-of-memory"
    assert recipe.latest_checkpoint(tmp_path / "run").name == "step-0000004"


def test_early_stopping_and_target_loss(tmp_path, tiny_model):
    from muse_desktop.training.recipe import train

    data = write_triples(tmp_path / "d.jsonl", FACTS * 1)
    stuck = tiny_config(tiny_model, data, learning_rate=1e-12, min_learning_rate=1e-12, validation_split=0.34,
                        eval_steps=1, early_stopping_patience=2, max_steps=40)
    events = list(train(stuck, tmp_path / "stuck"))
    assert len(losses(events, "val_loss")) == 3  # best, then two without improvement
    assert events[-1].data["stopped"].startswith("Early stopping")
    quick = tiny_config(tiny_model, data, target_loss=5.0, learning_rate=1e-2, max_steps=200)
    events = list(train(quick, tmp_path / "quick"))
    assert losses(events)[-1] < 5.0 and len(losses(events)) < 200
    assert events[-1].data["stopped"].startswith("Reached the target loss")


# --- child process: kill, cancel, resume exactly -------------------------------------------


def adapter_tensors(run_dir: Path):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_a_killed_or_cancelled_run_resumes_to_the_same_adapter(tmp_path, tiny_model):
    """Cancel mid-window and SIGKILL mid-run; resuming gives the adapter of an uninterrupted run, bit for bit."""
    import torch

    from muse_desktop.base.events import CancelToken
    from muse_desktop.training.child import read_events, run_training
    from muse_desktop.training.config import TrainingError

    data = write_triples(tmp_path / "d.jsonl")
    # Dropout on, so that a resume that lost the random state would differ.
    config = tiny_config(tiny_model, data, lora_dropout=0.1, max_steps=120, save_steps=4, gradient_accumulation=2,
                         batch_size=1, save_total_limit=2)
    list(run_training(config, tmp_path / "straight"))

    run = tmp_path / "interrupted"
    token = CancelToken()
    with pytest.raises(TrainingError) as stopped:
        for event in run_training(config, run, token):
            if isinstance(event, Progress) and event.done >= 6:
                token.cancel()
    assert stopped.value.kind == "cancelled"
    # SIGKILL: no chance to save anything; the run continues from its last checkpoint.
    children = []
    with pytest.raises(TrainingError, match="killed by signal 9") as killed:
        for event in run_training(None, run, on_start=children.append):
            if isinstance(event, Progress) and event.done >= 14:
                os.kill(children[0].pid, signal.SIGKILL)
    assert killed.value.kind == "crashed"
    from muse_desktop.training.recipe import latest_checkpoint

    checkpoint_step = int(latest_checkpoint(run).name.split("-")[1])
    seen_before = len(read_events(run))
    list(run_training(None, run))
    resumed_steps = [e.done for e in read_events(run)[seen_before:] if isinstance(e, Progress)]
    assert resumed_steps[0] == checkpoint_step + 1  # continued right after the last checkpoint
    straight, resumed = adapter_tensors(tmp_path / "straight"), adapter_tensors(run)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name  # tolerance: exact
    steps = [e.done for e in read_events(run) if isinstance(e, Progress)]
    assert steps[-1] == 120 and len([s for s in steps if s == 120]) == 1


def test_two_processes_under_accelerate_launch_save_one_adapter(tmp_path, tiny_model):
    import shutil

    from muse_desktop.training.runfolder import RunFolder

    run = tmp_path / "ddp"
    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), max_steps=6, batch_size=1)
    RunFolder.create(run, config)
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    result = subprocess.run(
        # --multi_gpu starts torchrun; with no GPU the processes talk over gloo on the CPU.
        # (accelerate's --cpu alone would start a single process.)
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "muse_desktop.training.child", "--run-dir", str(run)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"event"')]
    assert [e["event"] for e in events].count("done") == 1  # only the main process reports and saves
    assert list(run.glob("adapter/adapter_model.safetensors"))
    assert any("in 2 processes" in e.get("message", "") for e in events), [e.get("message") for e in events][:5]


# --- from training to chat -------------------------------------------------------------------


def test_a_memorised_answer_survives_export_both_ways_into_the_chat(tmp_path, tiny_model, isolated_home):
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, Sampling
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.store import Store
    from muse_desktop.training.export import export_run
    from muse_desktop.training.recipe import train

    facts = FACTS[:3]
    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl", facts), batch_size=3, max_steps=150,
                         learning_rate=3e-2, lora_r=32, lora_alpha=64, name="memorise")
    run = tmp_path / "run"
    events = list(train(config, run))
    # The tiny model's output layer is random and frozen, which puts a floor (~0.35) under the
    # loss; what matters is that the greedy answer is the trained one, checked below.
    assert losses(events)[-1] < 0.5
    store = Store()
    merge_events = list(export_run(run, "merge", "Q8_0", store=store))
    merged = merge_events[-1]
    adapter = list(export_run(run, "adapter", "F16", store=store, models_dir=tmp_path / "models"))[-1]
    assert [e.kind for e in store.library()] == ["adapter", "model"]
    # The quantized file was compared with its F16 original; the person is told, the library keeps it.
    assert any(getattr(e, "message", "").startswith("Checked the Q8_0 file against F16") for e in merge_events)
    check = store.library()[1].info["quant_check"]
    assert check["qtype"] == "Q8_0" and check["top1_agreement"] > 0.9 and check["n_tokens"] > 100
    greedy = Sampling(temperature=0.0, max_new_tokens=40)
    for user_type, question, answer in facts:
        for path, adapters in ((merged.path, []), (adapter.data["base_path"], [AdapterSpec(adapter.path, 1.0)])):
            engine = ChatEngine(path, EngineSettings(threads=2, context_length=256), adapters)
            try:
                done = list(engine.generate(user_type, [Turn("user", question)], None, greedy))[-1]
            finally:
                engine.close()
            assert done.data["text"].strip() == answer, (path, question)
    store.close()


def test_train_and_export_from_the_command_line(tmp_path, tiny_model, capsys):
    from muse_desktop.cli import main

    write_triples(tmp_path / "d.jsonl")
    (tmp_path / "c.yaml").write_text(
        f"preset: muse-1\nbase_model: {tiny_model}\ndataset: d.jsonl\nmax_steps: 4\nbatch_size: 2\n"
        "lora_r: 4\nlora_alpha: 8\nvalidation_split: 0\neval_questions: 0\n")
    assert main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr()
    assert "Training finished after 4 steps" in out.out
    assert main(["export", str(tmp_path / "run"), "--type", "Q8_0"]) == 0
    assert "Exported to" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "Cannot read" in capsys.readouterr().err


# --- hardware check ------------------------------------------------------------------------

PHI3_MINI = dict(hidden_size=3072, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192, vocab_size=32064)


def test_the_weight_count_matches_a_real_model(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from muse_desktop.training.hardware import Shape, read_model_config

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    assert Shape.of(read_model_config(tiny_model)).params() == sum(p.numel() for p in model.parameters())
    assert round(Shape.of(PHI3_MINI).params() / 1e9, 2) == 3.82  # Phi-3-mini's published 3.8B


def test_the_hardware_check_recommends_a_preset_or_says_why_not():
    from muse_desktop.training.hardware import Hardware, estimate_memory, recommend

    qlora = load_preset("qlora")
    qlora.seq_len = 1024
    assert estimate_memory(qlora, PHI3_MINI).gb < 6  # QLoRA on Phi-3-mini fits a 6 GB laptop GPU
    gpu = lambda gb: Hardware("cuda", "Laptop GPU", gb * 2**30, True)  # noqa: E731
    assert recommend(PHI3_MINI, gpu(6)).preset == "qlora"
    assert recommend(PHI3_MINI, gpu(24)).preset == "muse-3" and not recommend(PHI3_MINI, gpu(24)).overrides
    assert recommend(PHI3_MINI, gpu(16)).overrides == {"gradient_checkpointing": True}
    too_small = recommend(PHI3_MINI, gpu(3))
    assert too_small.preset is None and "has 3.0 GB; even qlora needs about" in too_small.message


def test_the_hardware_probe_measures_this_computer():
    from muse_desktop.training.hardware import epoch_seconds, probe

    hw = probe()
    assert hw.memory_bytes > 2**30 and hw.flops > 1e8
    assert epoch_seconds(100_000, load_preset("muse-3"), PHI3_MINI, hw) > 1


def test_held_out_questions_are_answered_before_and_after_and_scored(tmp_path, tiny_model):
    import sacrebleu

    from muse_desktop.training.evaluate import grade
    from muse_desktop.training.recipe import train
    from muse_desktop.ui.trainer import run_details

    config = tiny_config(tiny_model, write_triples(tmp_path / "d.jsonl"), validation_split=0.34, eval_questions=2,
                         eval_max_new_tokens=12, max_steps=30)
    done = list(train(config, tmp_path / "run"))[-1]
    rows = done.data["evaluation"]["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["reference"] in [a for _, _, a in FACTS]
        assert row["bleu_tuned"] == sacrebleu.sentence_bleu(row["tuned"], [row["reference"]]).score
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["evaluation"]["by_user_type"] and saved["steps"] == 30
    assert "  before: " in run_details(tmp_path / "run") and "expected:" in run_details(tmp_path / "run")
    # Flesch-Kincaid by hand: 0.39 * words/sentences + 11.8 * syllables/words - 15.59.
    assert grade("The cat sat on the mat.") == pytest.approx(0.39 * 6 + 11.8 * 6 / 6 - 15.59, abs=0.01)
    assert grade("...") is None
