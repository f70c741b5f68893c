"""A person's own model (issue 16, part 3) on the tiny model: choices counted, data written, the add-on
trained in the child process, exported, registered as the person's candidate, answering as they chose;
and a person's add-on trained on top of MUsE's gives llama.cpp's logits with both add-ons."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import last_logits, make_peft_adapter
from muse_desktop.base.events import Done, Metric
from muse_desktop.chat.store import Store
from muse_desktop.household import own_model
from muse_desktop.household import people as household
from muse_desktop.household.settings import Settings

# Short, distinctive best answers: the add-on must make the model write exactly these.
ROSE = [
    ("How do I call my son?", "Press the green button twice."),
    ("What is the weather today?", "Look out of the kitchen window."),
    ("When is my doctor visit?", "Tuesday at ten, Rose."),
    ("Where are my glasses?", "On your head, as always."),
    ("How do I make tea?", "Kettle first, then the cup."),
    ("Who won the match?", "Nobody, it rained all day."),
    ("What can I cook tonight?", "Soup with bread and butter."),
    ("Which bus goes to town?", "The number nine, at the corner."),
]
WORST = "I am sorry, I cannot help with that question at all."
# Quick, and enough for the tiny model to answer every trained question exactly (measured: 8 of 8).
TINY = {"learning_rate": 5e-3, "max_steps": 100, "batch_size": 4, "save_steps": 40, "lora_r": 16,
        "lora_alpha": 32, "scheduler": "constant"}
GREEDY_WORDS = 24


def choose(store, person_id, rows, user_type="Elderly"):
    for question, best in rows:
        candidates = [{"text": t, "framing": "muse", "temperature": 1.0}
                      for t in (WORST, best, "Maybe.", "Ask someone else.")]
        store.add_preference(user_type, [], question, candidates, best=1, worst=0, profile_id=person_id)


@pytest.fixture(scope="session")
def tiny_f16(tmp_path_factory, tiny_model):
    """The tiny model as an F16 GGUF, as the demo model is made (an add-on's F16 LoRA is checked on F16)."""
    from converters.convert import convert_model

    target = tmp_path_factory.mktemp("own-gguf") / "tiny-f16.gguf"
    list(convert_model(tiny_model, target, "f16"))
    return target


@pytest.fixture
def household_store(tmp_path, tiny_model, tiny_f16):
    store = Store(tmp_path / "muse.sqlite3")
    model = str(tiny_f16)
    store.add_to_library("Tiny", "model", model, info={"hf_dir": str(tiny_model)})
    rose = household.add_person(store, "Rose", Settings(), user_type_id="older-adult")
    sam = household.add_person(store, "Sam", Settings(), user_type_id="child")
    yield store, rose, sam, Settings(model_path=model)
    store.close()


def greedy_answers(model, adapters, questions, user_type="Elderly"):
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings, Sampling

    engine = ChatEngine(model, EngineSettings(context_length=512, threads=2), [AdapterSpec(p) for p in adapters])
    sampling = Sampling(temperature=0.0, top_p=1.0, repeat_penalty=1.0, max_new_tokens=GREEDY_WORDS)
    try:
        return [[e for e in engine.generate(user_type, [Turn("user", q)], None, sampling)
                 if isinstance(e, Done)][-1].data["text"].strip() for q in questions]
    finally:
        engine.close()


def test_readiness_counts_choices_and_says_what_is_missing(household_store, tmp_path):
    store, rose, sam, settings = household_store
    choose(store, rose.id, ROSE[:5])
    choose(store, sam.id, ROSE[5:6], user_type="Child")
    ready = own_model.readiness(store, rose.id)
    assert (ready.choices, ready.needed, ready.pairs, ready.ready) == (5, own_model.NEEDED_CHOICES, 5, False)
    assert ready.words == "You have chosen 5 answers. Choose 3 more, then MUsE can learn from you."
    assert own_model.readiness(store, sam.id).words.startswith("You have chosen 1 answer. Choose 7 more")
    base = own_model.training_base(settings, store)
    with pytest.raises(own_model.OwnModelError, match="Choose 3 more"):
        own_model.plan(store, rose, base, runs_root=tmp_path / "runs")
    choose(store, rose.id, ROSE[5:])
    ready = own_model.readiness(store, rose.id)
    assert ready.ready and not ready.dpo and ready.words.endswith("That is enough: MUsE can learn from you.")

    extra = [{"user_type": "Elderly", "question": "Can I walk to the shop?", "answer": "Yes, take the umbrella."}]
    made = own_model.plan(store, rose, base, extra_rows=extra, runs_root=tmp_path / "runs")
    rows = [json.loads(line) for line in made.data_path.read_text().splitlines()]
    assert [(r["question"], r["answer"]) for r in rows] == ROSE + [("Can I walk to the shop?", "Yes, take the umbrella.")]
    assert made.examples == 9 and [s.name for s in made.stages] == ["learn"] and made.pairs_path is None
    learn = made.stages[0].config
    assert learn.base_model == str(base.base_dir) and learn.dataset == str(made.data_path) and not learn.start_adapter
    assert 8 <= learn.lora_r <= 16 and learn.validation_split == 0
    with_pairs = own_model.plan(store, rose, base, runs_root=tmp_path / "runs", dpo=True)
    assert [s.name for s in with_pairs.stages] == ["learn", "prefer"] and with_pairs.pairs == 8
    prefer = with_pairs.stages[1].config
    assert prefer.dpo_pairs == str(with_pairs.pairs_path) and prefer.start_adapter == str(with_pairs.dpo_start)
    assert json.loads(with_pairs.pairs_path.read_text().splitlines()[0])["rejected"] == WORST

    store.add_to_library("Lost", "model", str(tmp_path / "elsewhere.gguf"), info={})
    with pytest.raises(own_model.OwnModelError, match="cannot find the original files") as lost:
        own_model.training_base(Settings(model_path=str(tmp_path / "elsewhere.gguf")), store)
    assert "Get MUsE" in lost.value.advice


def test_suggestions_come_from_the_best_answers_of_that_person(household_store):
    store, rose, sam, _settings = household_store
    choose(store, rose.id, ROSE[:3])
    choose(store, sam.id, [("Why is the sky blue?", "Because of tiny bits of air.")], user_type="Child")
    prompts = []

    def ask(prompt):
        prompts.append(prompt)
        return f"Question: Is it time for lunch number {len(prompts)}?\nAnswer: Yes, at one o'clock sharp."

    events = list(own_model.suggest_more(store, rose.id, ask, 3))
    kept = events[-1].data["kept"]
    assert len(prompts) == 3 and all("Elderly" in p for p in prompts)
    assert any(best in prompts[0] for _q, best in ROSE[:3]) and "tiny bits of air" not in "".join(prompts)
    assert [k["question"] for k in kept][:1] == ["Is it time for lunch number 1?"]
    with pytest.raises(own_model.OwnModelError, match="at least two"):
        list(own_model.suggest_more(store, sam.id, ask, 1))


def test_the_own_model_answers_with_the_persons_best_answers(household_store, tmp_path):
    """Recorded choices → child-process training → GGUF LoRA checked and registered as Rose's candidate →
    greedy answers on the tiny GGUF with it reproduce her best answers, all of them."""
    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE)
    base = own_model.training_base(settings, store)
    made = own_model.plan(store, rose, base, runs_root=tmp_path / "runs", settings=TINY)
    events = list(own_model.make_model(made, store, models_dir=tmp_path / "models"))
    done = events[-1]
    assert isinstance(done, Done) and done.path.endswith(".gguf")
    assert len([e for e in events if isinstance(e, Metric) and e.name == "train_loss"]) == TINY["max_steps"]
    assert any("Checked against transformers" in getattr(e, "message", "") for e in events)
    entry = next(e for e in store.library() if e.path == done.path)
    assert entry.kind == "adapter" and entry.info["person"] == rose.id and entry.info["own"] is True
    person = store.profile(rose.id)
    assert person.settings[own_model.CANDIDATE] == done.path == own_model.candidate(store, rose.id)
    assert person.adapter_path == "" and done.data["previous"] == ""  # not her default until the check says so

    questions = [q for q, _a in ROSE]
    before = greedy_answers(settings.model_path, [], questions)
    after = greedy_answers(settings.model_path, [done.path], questions)
    matched = sum(got == best for got, (_q, best) in zip(after, ROSE, strict=True))
    assert matched == len(ROSE), list(zip(after, [a for _q, a in ROSE], strict=True))
    assert not any(got == best for got, (_q, best) in zip(before, ROSE, strict=True))

    own_model.accept(store, rose.id, done.path, 0.8)
    person = store.profile(rose.id)
    assert (person.adapter_path, person.adapter_scale) == (done.path, 0.8)
    assert own_model.CANDIDATE not in person.settings


def blind_picks(store, check, prefer_own: bool) -> None:
    """Rose picks by what she reads (the rounds carry no names): her own words, or any other answer."""
    from muse_desktop.evaluation import own_check

    best = dict(ROSE)
    for number, answers in enumerate(own_check.rounds(store, check)):
        assert not {"role", "model", "adapters"} & set(answers[0])
        mine = [a for a in answers if a["answer"].strip() == best[a["question"]]]
        others = [a for a in answers if a not in mine]
        assert len(mine) == 1 and others  # the new add-on wrote her answer; the baseline did not
        own_check.pick(store, check, number, (mine if prefer_own else others)[0]["id"])


def test_the_whole_loop_choices_training_add_on_and_her_blind_check(household_store, tmp_path):
    """Choices → training in the child process → add-on kept as candidate → greedy answers are hers → the
    blind check: picked less than the baseline, it is not hers (nothing changes, the candidate goes);
    picked more often, it becomes hers, and the chat's add-ons for her include it."""
    from muse_desktop.evaluation import own_check

    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE)
    made = own_model.plan(store, rose, own_model.training_base(settings, store), runs_root=tmp_path / "runs",
                          settings=TINY)
    done = list(own_model.make_model(made, store, models_dir=tmp_path / "models"))[-1]
    assert own_model.candidate(store, rose.id) == done.path and store.profile(rose.id).adapter_path == ""
    after = greedy_answers(settings.model_path, [done.path], [q for q, _a in ROSE])
    assert after == [a for _q, a in ROSE]

    def check(prefer_own: bool):
        number = own_check.new_check(store, settings, rose.id, done.path, seed=5, count=4)
        events = list(own_check.generate(store.path, number, settings.model_path, max_tokens=GREEDY_WORDS))
        assert isinstance(events[-1], Done)
        blind_picks(store, number, prefer_own)
        return number, own_check.decide(store, number)

    first, rejected = check(prefer_own=False)
    assert not rejected.kept and rejected.tally == {"new": 0, "baseline": 4}
    person = store.profile(rose.id)
    assert person.adapter_path == "" and own_model.candidate(store, rose.id) == ""  # the previous (none) stays
    assert household.adapters_for(settings, person) == []

    second, kept = check(prefer_own=True)
    assert kept.kept and kept.tally == {"new": 4, "baseline": 0}
    person = store.profile(rose.id)
    assert person.adapter_path == done.path and own_model.candidate(store, rose.id) == ""
    assert household.adapters_for(settings, person) == [(done.path, 1.0)]
    stored = {c["id"]: (c["tally"], c["decision"]["kept"]) for c in own_check.checks_for(store, rose.id)}
    assert stored == {first: ({"new": 0, "baseline": 4}, False), second: ({"new": 4, "baseline": 0}, True)}


def test_an_add_on_made_on_top_of_muse_stacks_in_llama_cpp(household_store, tiny_model, tmp_path):
    """MUsE installed as base + add-on: Rose's add-on is trained on base + MUsE merged (transformers), and
    llama.cpp with the base GGUF and both GGUF LoRAs gives the same logits as transformers."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from converters.convert import convert_adapter
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings

    store, rose, _sam, settings = household_store
    muse_dir = make_peft_adapter(tiny_model, tmp_path / "muse-adapter", seed=5, b_scale=0.5)
    muse_gguf = tmp_path / "muse-lora.gguf"
    list(convert_adapter(muse_dir, muse_gguf, tiny_model))
    store.add_to_library("MUsE add-on", "adapter", str(muse_gguf), settings.model_path,
                         info={"hf_dir": str(tiny_model), "hf_adapter": str(muse_dir)})
    settings.adapter_path = str(muse_gguf)
    choose(store, rose.id, ROSE)
    base = own_model.training_base(settings, store)
    assert base.start_adapter == muse_dir and base.muse_gguf == str(muse_gguf)
    made = own_model.plan(store, rose, base, runs_root=tmp_path / "runs", settings={**TINY, "max_steps": 12})
    assert made.stages[0].config.start_adapter == str(muse_dir)
    events = list(own_model.make_model(made, store, models_dir=tmp_path / "models"))
    done = events[-1]
    assert any("Checked against transformers" in getattr(e, "message", "") for e in events)

    engine = ChatEngine(settings.model_path, EngineSettings(context_length=512, threads=2))
    ids = engine.prompt_ids("Elderly", [Turn("user", ROSE[0][0])])
    alone = last_logits(engine, ids)
    engine.set_adapters([AdapterSpec(str(muse_gguf)), AdapterSpec(done.path)])
    both = last_logits(engine, ids)
    engine.set_adapters([AdapterSpec(str(muse_gguf))])
    muse_only = last_logits(engine, ids)
    engine.close()

    # Trained on top of MUsE: the first step's loss (the new add-on still zero) is base + MUsE's loss.
    from transformers import AutoTokenizer

    from muse_desktop.training.recipe import collate, epoch_batches, prepare_data

    config = made.stages[0].config
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    data = prepare_data(config, tokenizer)
    batch = collate([data.train[i] for i in epoch_batches(len(data.train), config.batch_size, config.seed, 0)[0]],
                    tokenizer.pad_token_id, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    with torch.no_grad():
        base_loss = float(hf(**batch).loss)
        merged = PeftModel.from_pretrained(hf, str(muse_dir)).merge_and_unload()
        muse_loss = float(merged(**batch).loss)
    first = next(e.value for e in events if isinstance(e, Metric) and e.name == "train_loss")
    assert first == pytest.approx(muse_loss, rel=1e-5) and abs(muse_loss - base_loss) > 1e-3
    stacked = PeftModel.from_pretrained(merged, str(made.stages[0].run_dir / "adapter")).eval()
    with torch.no_grad():
        expected = stacked(torch.tensor([ids])).logits[0, -1].double().numpy()
    gap = np.abs(both - expected).max()
    assert gap < 2e-3 * max(1.0, np.abs(expected).max()), gap
    # the person's add-on matters on top of MUsE, and MUsE's under it
    assert np.abs(both - muse_only).max() > 50 * gap and np.abs(muse_only - alone).max() > 50 * gap


def sft_margin(made) -> float:
    """Mean log p(best) − log p(worst) of the tiny model with the plan's first add-on (transformers + PEFT)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from muse_desktop.base.prompting.hf import HFTokenizer
    from muse_desktop.evaluation.preferences import read_pairs
    from muse_desktop.training.dpo import encode_pair, sequence_logprobs
    from muse_desktop.training.recipe import collate

    base = str(made.base.base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      str(made.stages[0].run_dir / "adapter")).eval()
    encoded = [encode_pair(p, HFTokenizer(tokenizer), None) for p in read_pairs(made.pairs_path)]
    with torch.no_grad():
        chosen = sequence_logprobs(model, collate([c for c, _r in encoded], tokenizer.pad_token_id, "cpu"))
        rejected = sequence_logprobs(model, collate([r for _c, r in encoded], tokenizer.pad_token_id, "cpu"))
    return float((chosen - rejected).mean())


def test_with_enough_pairs_a_dpo_stage_goes_on_top_of_the_first_add_on(household_store, tmp_path):
    """The DPO stage starts from base + the first stage's add-on (its reference), and the person's add-on
    is both stages' add-ons as one: checked by logits at export, and it still answers as Rose chose."""
    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE)
    base = own_model.training_base(settings, store)
    made = own_model.plan(store, rose, base, runs_root=tmp_path / "runs", settings=TINY, dpo=True,
                          dpo_settings={"max_steps": 8, "learning_rate": 5e-3, "save_steps": 0})
    events = list(own_model.make_model(made, store, models_dir=tmp_path / "models"))
    done = events[-1]
    prefer = done.data["results"]["prefer"]
    assert prefer["pairs"] == len(ROSE) and prefer["margin_end"] > prefer["margin_start"]
    # Its starting point (and reference) is the first stage's model: the same chosen-minus-rejected margin.
    assert prefer["margin_start"] == pytest.approx(sft_margin(made), rel=1e-4)
    assert [e.message for e in events if getattr(e, "unit", "") == "stages"][:3] == [
        "Step 1 of 3: Learning from your answers", "Step 2 of 3: Learning which answers you like least",
        "Step 3 of 3: Getting your add-on ready"]
    assert any("Checked against transformers" in getattr(e, "message", "") for e in events)
    assert own_model.candidate(store, rose.id) == done.path
    after = greedy_answers(settings.model_path, [done.path], [q for q, _a in ROSE])
    assert after == [a for _q, a in ROSE]


@pytest.mark.parametrize("way", ["add-on", "merged"])
def test_the_training_base_behind_get_muse_both_ways(tmp_path, way):
    """Get MUsE keeps the checkpoint and MUsE's adapter beside the GGUF files: the person's add-on goes on both."""
    from muse_desktop.models.getmuse import add_to_library

    models = tmp_path / "models"
    base_dir, adapter_dir = models / "Phi-3-mini-128k-instruct", models / "adapter-seohyunqkr--MUsE"
    for path in (base_dir / "config.json", base_dir / "model-00001-of-00002.safetensors",
                 adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_config.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    provenance = {"base_repo": "microsoft/Phi-3-mini-128k-instruct", "base_commit": "a" * 40,
                  "adapter_repo": "seohyunqkr/MUsE", "adapter_commit": "b" * 40, "way": way}
    model = models / ("base-Q4_K_M.gguf" if way == "add-on" else "muse-Q4_K_M.gguf")
    lora = models / "muse-lora-F16.gguf"
    store = Store(tmp_path / "muse.sqlite3")
    add_to_library(store, Done("", str(model), {"adapter_path": str(lora) if way == "add-on" else "",
                                                 "provenance": provenance}))
    settings = Settings(model_path=str(model), adapter_path=str(lora) if way == "add-on" else "")
    base = own_model.training_base(settings, store)
    assert (base.base_dir, base.start_adapter) == (base_dir, adapter_dir)
    assert base.muse_gguf == (str(lora) if way == "add-on" else "") and base.words == "Your add-on is made on top of MUsE."
    (adapter_dir / "adapter_model.safetensors").unlink()  # MUsE's own files gone: said in plain words
    with pytest.raises(own_model.OwnModelError, match="cannot find the original files of the add-on"):
        own_model.training_base(settings, store)
    store.close()


def test_the_training_base_of_a_model_made_on_the_trainer_page(tmp_path, tiny_model):
    from muse_desktop.training.config import config_from_dict
    from muse_desktop.training.runfolder import RunFolder

    store = Store(tmp_path / "muse.sqlite3")
    for name, start in (("plain", ""), ("stacked", str(tmp_path / "plain" / "adapter"))):
        run = RunFolder.create(tmp_path / name, config_from_dict(
            {"base_model": str(tiny_model), "dataset": "d.jsonl", "start_adapter": start}))
        run.adapter.mkdir()
        (run.adapter / "adapter_model.safetensors").write_text("{}")
        store.add_to_library(name, "model", str(tmp_path / f"{name}.gguf"), info={"run": str(run.path), "mode": "merge"})
    base = own_model.training_base(Settings(model_path=str(tmp_path / "plain.gguf")), store)
    assert (base.base_dir, base.start_adapter) == (tiny_model, tmp_path / "plain" / "adapter")
    with pytest.raises(own_model.OwnModelError, match="made from two add-ons at once"):
        own_model.training_base(Settings(model_path=str(tmp_path / "stacked.gguf")), store)
    store.close()


def test_a_run_on_top_of_a_start_adapter_resumes_to_the_same_add_on(tmp_path, tiny_model):
    """The start add-on is merged again on resume: a cancelled run ends exactly where a straight one does."""
    import torch

    from muse_desktop.base.events import CancelToken, Progress
    from muse_desktop.training.config import config_from_dict
    from muse_desktop.training.recipe import TrainingError, train
    from test_training import adapter_tensors

    muse_dir = make_peft_adapter(tiny_model, tmp_path / "muse-adapter", seed=5, b_scale=0.5)
    data = tmp_path / "rose.jsonl"
    data.write_text("".join(json.dumps({"user_type": "Elderly", "question": q, "answer": a}) + "\n" for q, a in ROSE))
    config = config_from_dict({**own_model.SFT_SETTINGS, **TINY, "max_steps": 8, "save_steps": 0,
                               "lora_dropout": 0.1, "base_model": str(tiny_model), "dataset": str(data),
                               "start_adapter": str(muse_dir)})
    list(train(config, tmp_path / "straight"))
    token = CancelToken()
    with pytest.raises(TrainingError):
        for event in train(config, tmp_path / "stopped", token):
            if isinstance(event, Progress) and event.done >= 4:
                token.cancel()
    list(train(config, tmp_path / "stopped"))
    straight, resumed = adapter_tensors(tmp_path / "straight"), adapter_tensors(tmp_path / "stopped")
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
