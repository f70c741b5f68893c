"""A household on one computer (issue 16, the core): people, what is theirs, and their add-on in the engine."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import last_logits
from muse_desktop.household import people as household
from muse_desktop.models.demo_model import Variant
from muse_desktop.evaluation.preferences import export_instruction_data, export_pairs, read_pairs
from muse_desktop.household.settings import Settings
from muse_desktop.chat.store import Store

CANDIDATES = [{"text": t, "framing": "muse", "temperature": 1.0} for t in ("one", "two", "three", "four")]


def used_before_people(path) -> tuple[int, int]:
    """A database as the current release writes it: no people, conversations and preferences of nobody."""
    store = Store(path)
    for number in range(3):
        conversation = store.create_conversation("Elderly", title=f"Talk {number}")
        store.add_message(conversation.id, "user", f"Question {number}?")
        store.add_message(conversation.id, "assistant", f"Answer {number}.")
        store.add_preference("Elderly", [], f"Question {number}?", CANDIDATES, best=0, worst=3, reason="clear",
                             conversation_id=conversation.id)
    counts = (len(store.conversations()), sum(len(store.messages(c.id)) for c in store.conversations()))
    store.close()
    return counts


def test_a_computer_used_before_people_existed_gets_its_first_person_with_everything(tmp_path):
    path = tmp_path / "muse.sqlite3"
    conversations, messages = used_before_people(path)
    settings = Settings(user_type_id="older-adult", zoom_percent=175, theme="high-contrast", voice_id="system",
                        reading_speed=0.8)
    store = Store(path)  # the new code opens the old file
    me = household.first_person(store, settings)
    assert me is not None and me.name == household.FIRST_PERSON and me.user_type_id == "older-adult"
    assert me.settings["zoom_percent"] == 175 and me.settings["voice_id"] == "system"
    assert len(store.conversations(profile_id=me.id)) == conversations
    assert sum(len(store.messages(c.id)) for c in store.conversations(me.id)) == messages
    assert [p["profile_id"] for p in store.preferences()] == [me.id] * 3
    assert household.first_person(store, settings) is None  # once only
    assert len(store.profiles()) == 1
    store.close()
    fresh = Store(tmp_path / "new.sqlite3")  # a computer never used: nobody is invented
    assert household.first_person(fresh, Settings()) is None and fresh.profiles() == []
    fresh.close()


def test_two_people_have_their_own_history_settings_and_preferences(tmp_path):
    store = Store(tmp_path / "muse.sqlite3")
    computer = Settings(model_path="/models/muse.gguf", threads=2)
    grandma = household.add_person(store, "  Grandma   Rose ", computer, user_type_id="older-adult")
    sam = household.add_person(store, "Sam", computer, user_type_id="child")
    assert grandma.name == "Grandma Rose"
    as_grandma = household.switch_to(computer, grandma)
    as_grandma.zoom_percent, as_grandma.reading_speed = 200, 0.7
    household.remember(store, grandma.id, as_grandma)
    as_sam = household.switch_to(as_grandma, store.profile(sam.id))
    assert (as_sam.user_type_id, as_sam.zoom_percent, as_sam.reading_speed, as_sam.person_id) == ("child", 100, 0.0, sam.id)
    assert as_sam.model_path == "/models/muse.gguf" and as_sam.threads == 2  # the computer's part stays
    back = household.switch_to(as_sam, store.profile(grandma.id))
    assert (back.user_type_id, back.zoom_percent, back.reading_speed) == ("older-adult", 200, 0.7)
    for person, question in ((grandma, "How do I call my son?"), (sam, "Why is the sky blue?")):
        conversation = store.create_conversation(person.user_type_id, profile_id=person.id)
        store.add_message(conversation.id, "user", question)
        store.add_preference(person.user_type_id, [], question, CANDIDATES, best=1, worst=2,
                             conversation_id=conversation.id, profile_id=person.id)
    assert [store.messages(c.id)[0].content for c in store.conversations(grandma.id)] == ["How do I call my son?"]
    assert [store.messages(c.id)[0].content for c in store.conversations(sam.id)] == ["Why is the sky blue?"]
    assert export_instruction_data(store, tmp_path / "rose.jsonl", grandma.id) == 1
    assert "call my son" in (tmp_path / "rose.jsonl").read_text() and "sky" not in (tmp_path / "rose.jsonl").read_text()
    assert export_pairs(store, tmp_path / "sam.jsonl", sam.id) == 1
    assert read_pairs(tmp_path / "sam.jsonl")[0]["question"] == "Why is the sky blue?"
    with pytest.raises(household.HouseholdError, match="Someone called Sam is already on this computer"):
        household.add_person(store, "Sam", computer)
    with pytest.raises(household.HouseholdError, match="type a name"):
        household.add_person(store, "   ", computer)
    store.close()


def test_a_damaged_personal_setting_falls_back_and_loses_nothing_else(tmp_path):
    store = Store(tmp_path / "muse.sqlite3")
    person = household.add_person(store, "Ana", Settings(), user_type_id="nurse")
    store.update_profile(person.id, settings={"zoom_percent": "huge", "theme": 7, "read_aloud": "yes",
                                              "reading_speed": 1.2})
    settings = household.switch_to(Settings(), store.profile(person.id))
    assert (settings.zoom_percent, settings.theme, settings.read_aloud) == (100, Settings().theme, False)
    assert settings.reading_speed == 1.2 and settings.user_type_id == "nurse"
    store.close()


def test_removing_a_person_removes_what_is_theirs_and_only_that(tmp_path):
    data = tmp_path / "data"
    (data / "models").mkdir(parents=True)
    store = Store(tmp_path / "muse.sqlite3")
    rose = household.add_person(store, "Rose", Settings(), user_type_id="older-adult")
    sam = household.add_person(store, "Sam", Settings(), user_type_id="child")
    made_for_rose = data / "models" / "rose-lora.gguf"
    made_for_sam = data / "models" / "sam-lora.gguf"
    her_own_file = tmp_path / "Downloads" / "from-a-friend.gguf"  # opened from her folders: never deleted
    her_own_file.parent.mkdir()
    for path in (made_for_rose, made_for_sam, her_own_file):
        path.write_bytes(b"GGUF")
    store.add_to_library("Rose's model", "adapter", str(made_for_rose), info={"person": rose.id})
    store.add_to_library("Sam's model", "adapter", str(made_for_sam), info={"person": sam.id})
    household.attach_adapter(store, rose.id, her_own_file, 0.5)
    household.attach_adapter(store, sam.id, made_for_sam)
    for person in (rose, sam):
        conversation = store.create_conversation(person.user_type_id, profile_id=person.id)
        store.add_message(conversation.id, "user", "Hello")
        store.add_preference(person.user_type_id, [], "Hello", CANDIDATES, best=0, worst=1, profile_id=person.id)
    removed = household.remove_person(store, rose.id, data)
    assert removed == [made_for_rose] and not made_for_rose.exists() and her_own_file.exists()
    assert [p.name for p in store.profiles()] == ["Sam"]
    assert store.conversations(rose.id) == [] and store.preferences(rose.id) == []
    assert len(store.conversations(sam.id)) == 1 and len(store.preferences(sam.id)) == 1 and made_for_sam.exists()
    assert [e.name for e in store.library()] == ["Sam's model"]
    with pytest.raises(household.HouseholdError, match="no longer on this computer"):
        household.remove_person(store, rose.id, data)
    store.close()


def test_switching_person_applies_their_add_on_in_the_engine(tiny_gguf, tiny_model, adapters, tmp_path):
    """Logits with a person's add-on equal those with that adapter loaded directly, and differ from the base."""
    from converters.convert import convert_adapter
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings
    from muse_desktop.base.prompting import Turn

    files = {}
    for name in ("all", "rslora"):
        files[name] = tmp_path / f"{name}.gguf"
        list(convert_adapter(adapters[name], files[name], tiny_model))
    store = Store(tmp_path / "muse.sqlite3")
    rose = household.attach_adapter(store, household.add_person(store, "Rose", Settings()).id, files["all"])
    sam = household.attach_adapter(store, household.add_person(store, "Sam", Settings()).id, files["rslora"], 0.5)
    nobody = household.add_person(store, "Guest", Settings())
    model = tiny_gguf[Variant.MINI_4K]

    def logits(chat):
        return last_logits(chat, ids)

    shared = ChatEngine(model, EngineSettings(context_length=512, threads=2))
    ids = shared.prompt_ids("Child", [Turn("user", "Why is the sky blue?")])
    seen = {}
    for person in (rose, sam, nobody, rose):  # switching back and forth on one open model
        specs = [AdapterSpec(path, scale) for path, scale in household.adapters_for(Settings(), person)]
        shared.set_adapters(specs)
        seen.setdefault(person.name, []).append(logits(shared))
    base = seen["Guest"][0]
    for person, path, scale in ((rose, files["all"], 1.0), (sam, files["rslora"], 0.5)):
        direct = ChatEngine(model, EngineSettings(context_length=512, threads=2), [AdapterSpec(str(path), scale)])
        expected = logits(direct)
        direct.close()
        for got in seen[person.name]:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert np.abs(expected - base).max() > 1e-2  # the add-on changes the answer
    # with MUsE installed as an add-on, the person's add-on goes on top of it (two adapters, each its scale)
    computer = Settings(adapter_path=str(files["rslora"]), adapter_scale=1.0)
    assert household.adapters_for(computer, rose) == [(str(files["rslora"]), 1.0), (str(files["all"]), 1.0)]
    shared.set_adapters([AdapterSpec(p, s) for p, s in household.adapters_for(computer, rose)])
    both = logits(shared)
    assert np.abs(both - seen["Rose"][0]).max() > 1e-3 and np.abs(both - base).max() > 1e-2
    shared.close()
    store.close()
