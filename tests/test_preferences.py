"""Preference records, their export as instruction data and pairs, and DPO that widens the margin."""

from __future__ import annotations

import json

import pytest

from muse_desktop.evaluation.preferences import DEFAULT_GRID, Framing, export_instruction_data, export_pairs, read_pairs
from muse_desktop.chat.store import Store, StoreError

PAIRS = [
    ("Child", "Why is the sky blue?", "Sunlight bounces off tiny bits of air, and blue bounces most.",
     "Rayleigh scattering is inversely proportional to the fourth power of wavelength."),
    ("Elderly", "How do I call my grandson?", "Press the green button, then his name.",
     "Navigate to the dialer application and initiate a voice session."),
    ("Child", "What do bees make?", "Bees make sweet honey from flowers.",
     "Apis mellifera produce honey via regurgitation and evaporation."),
    ("Farmer", "When do I plant potatoes?", "In spring, when the soil is warm.",
     "Solanum tuberosum planting depends on soil temperature thresholds."),
]


def record_all(store: Store) -> None:
    for user_type, question, good, bad in PAIRS:
        candidates = [{"text": text, "framing": spec.framing, "temperature": spec.temperature}
                      for text, spec in zip([good, "Meh.", "Hmm.", bad], DEFAULT_GRID, strict=True)]
        store.add_preference(user_type, [], question, candidates, best=0, worst=3, reason="clear words")


def test_the_research_grid_and_the_records(isolated_home):
    assert [(s.framing, s.temperature) for s in DEFAULT_GRID] == [
        (Framing.MUSE, 1.0), (Framing.MUSE, 0.1), (Framing.PLAIN, 1.0), (Framing.PLAIN, 0.1)]
    store = Store()
    record_all(store)
    saved = store.preferences()
    assert len(saved) == 4 and saved[0]["reason"] == "clear words" and saved[0]["candidates"][0]["temperature"] == 1.0
    with pytest.raises(StoreError, match="two different candidates"):
        store.add_preference("Child", [], "q", [{"text": "a"}, {"text": "b"}], best=1, worst=1)
    store.close()


def test_preferences_export_as_instruction_data_and_pairs(tmp_path, isolated_home):
    from muse_desktop.data.datasets import Format, load_dataset

    store = Store()
    record_all(store)
    assert export_instruction_data(store, tmp_path / "sft.jsonl") == 4
    report = load_dataset(tmp_path / "sft.jsonl")
    assert report.format == Format.MUSE and len(report.examples) == 4 and not report.problems
    assert report.examples[0].turns[1].content == PAIRS[0][2]
    assert export_pairs(store, tmp_path / "pairs.jsonl") == 4
    pairs = read_pairs(tmp_path / "pairs.jsonl")
    assert (pairs[1]["chosen"], pairs[1]["rejected"]) == PAIRS[1][2:]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q", "chosen": "a"}) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        read_pairs(tmp_path / "bad.jsonl")
    store.close()


def test_dpo_widens_the_chosen_minus_rejected_margin(tmp_path, tiny_model, isolated_home):
    from muse_desktop.base.events import Done, Metric
    from muse_desktop.training.child import run_training
    from muse_desktop.training.config import config_from_dict

    store = Store()
    record_all(store)
    export_pairs(store, tmp_path / "pairs.jsonl")
    store.close()
    config = config_from_dict({"preset": "muse-3", "base_model": str(tiny_model), "dpo_pairs": str(tmp_path / "pairs.jsonl"),
                               "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "learning_rate": 5e-3,
                               "batch_size": 4, "max_steps": 30, "dpo_beta": 0.1})
    events = list(run_training(config, tmp_path / "run"))  # the recipe's child process
    done = events[-1]
    assert isinstance(done, Done) and done.data["stage"] == "dpo"
    assert done.data["margin_end"] > done.data["margin_start"] + 5.0
    losses = [e.value for e in events if isinstance(e, Metric) and e.name == "dpo_loss"]
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy = reference at the start: -log σ(0)
    assert losses[-1] < 0.3
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_preferences_export_from_the_command_line(tmp_path, isolated_home, capsys):
    from muse_desktop.cli import main

    store = Store()
    record_all(store)
    store.close()
    assert main(["preferences", "export", "--instructions", str(tmp_path / "i.jsonl"),
                 "--pairs", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "4 question → best answer rows" in out and "4 chosen/rejected pairs" in out
    assert len(read_pairs(tmp_path / "p.jsonl")) == 4
    assert main(["preferences", "export"]) == 2


def test_one_persons_preferences_export_from_the_command_line(tmp_path, isolated_home, capsys):
    """`--person NAME` writes only that person's choices; `people` lists who has how many."""
    from muse_desktop.cli import main

    store = Store()
    grandma = store.create_profile("Grandma", user_type_id="elderly")
    leo = store.create_profile("Leo", user_type_id="child")
    for (user_type, question, good, bad), who in zip(PAIRS, [leo, grandma, leo, None], strict=True):
        candidates = [{"text": t} for t in (good, "Meh.", "Hmm.", bad)]
        store.add_preference(user_type, [], question, candidates, best=0, worst=3,
                             profile_id=who.id if who else None)
    store.close()
    assert main(["preferences", "export", "--person", "leo", "--pairs", str(tmp_path / "p.jsonl")]) == 0
    assert [p["question"] for p in read_pairs(tmp_path / "p.jsonl")] == [PAIRS[0][1], PAIRS[2][1]]
    assert "for Leo" in capsys.readouterr().out
    assert main(["preferences", "export", "--person", "Grandpa", "--pairs", str(tmp_path / "q.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "No one called Grandpa" in err and "Grandma" in err and not (tmp_path / "q.jsonl").exists()
    assert main(["people"]) == 0
    out = capsys.readouterr().out
    assert "Grandma" in out and "Leo" in out
    assert [line.split()[-2] for line in out.splitlines() if line.startswith(("Grandma", "Leo"))] == ["1", "2"]


def test_the_candidate_grid_can_be_configured():
    from muse_desktop.evaluation.preferences import CandidateSpec, parse_grid

    assert parse_grid("") == DEFAULT_GRID
    assert parse_grid("muse:0.7, plain:0.2, muse:1.2") == (
        CandidateSpec(Framing.MUSE, 0.7), CandidateSpec(Framing.PLAIN, 0.2), CandidateSpec(Framing.MUSE, 1.2))
    for bad, reason in (("muse:hot, plain:1", "is a number"), ("poetic:1, muse:1", "muse or plain"),
                        ("muse:3, plain:1", "from 0 to 2"), ("muse:1", "2 to 6 candidates")):
        with pytest.raises(ValueError, match=reason):
            parse_grid(bad)
