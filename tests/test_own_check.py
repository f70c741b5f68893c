"""A person's own blind check of their new add-on (issue 16, part 4): real answers, blind, the keep-or-not rule."""

from __future__ import annotations

import pytest

from muse_desktop.chat.store import Store
from muse_desktop.evaluation import own_check
from muse_desktop.household import people as household
from muse_desktop.household.settings import Settings
from muse_desktop.models.demo_model import Variant

CANDIDATES = [{"text": t, "framing": "muse", "temperature": 1.0} for t in ("one", "two", "three", "four")]
ROSE_ASKED = [("Elderly", "How do I call my son?"), ("Elderly", "What is a good soup for winter?"),
              ("Elderly", "Why do leaves fall?"), ("Child", "What do bees make?"), ("Elderly", "Is tea good for me?"),
              ("Elderly", "Why do  leaves fall?")]  # asked twice: one question
SETTINGS = dict(threads=2, context_length=512)


@pytest.fixture(scope="module")
def gguf_adapters(adapters, tiny_model, tmp_path_factory):
    from converters.convert import convert_adapter

    root = tmp_path_factory.mktemp("own-check-adapters")
    files = {}
    for name in ("all", "rslora", "patterns"):
        files[name] = root / f"{name}.gguf"
        list(convert_adapter(adapters[name], files[name], tiny_model))
    return files


def household_with(tmp_path, tiny_gguf, sam_adapter=None, rose_before=""):
    """Rose (who asked ROSE_ASKED) and, when ``sam_adapter`` is given, Sam with that add-on."""
    store = Store(tmp_path / "muse.sqlite3")
    settings = Settings(model_path=str(tiny_gguf[Variant.MINI_4K]))
    rose = household.add_person(store, "Rose", settings, user_type_id="older-adult")
    for user_type, question in ROSE_ASKED:
        store.add_preference(user_type, [], question, CANDIDATES, best=0, worst=1, profile_id=rose.id)
    if rose_before:
        household.attach_adapter(store, rose.id, rose_before)
    if sam_adapter is not None:
        sam = household.add_person(store, "Sam", settings, user_type_id="child")
        store.add_preference("Child", [], "Why is the sky blue?", CANDIDATES, best=0, worst=1, profile_id=sam.id)
        household.attach_adapter(store, sam.id, sam_adapter, 0.5)
    return store, settings, rose


def answered_check(store, settings, person_id, new_adapter, seed=11, max_tokens=8) -> int:
    from muse_desktop.chat.engine import EngineSettings

    check = own_check.new_check(store, settings, person_id, new_adapter, seed=seed)
    events = list(own_check.generate(store.path, check, settings.model_path, max_tokens=max_tokens,
                                     engine_settings=EngineSettings(**SETTINGS)))
    assert events[-1].data == {"check": check, "rounds": 4}
    return check


def by_role(store, check) -> dict[str, dict[int, int]]:
    """role -> {round: answer id}, read behind the screen's back (the rounds the UI gets have no role)."""
    roles = [c["role"] for c in store.own_check(check)["models"]]
    out: dict[str, dict[int, int]] = {}
    for row in store.own_check_results(check):
        out.setdefault(roles[row["model_index"]], {})[row["round"]] = row["id"]
    return out


def orders(store, check) -> list[tuple[int, ...]]:
    rows = store.own_check_results(check)
    return [tuple(r["model_index"] for r in rows if r["round"] == n) for n in sorted({r["round"] for r in rows})]


def test_own_questions_answered_by_each_add_on_as_an_engine_with_it_writes_greedily(tiny_gguf, gguf_adapters,
                                                                                     tmp_path):
    from muse_desktop.base.prompting import Turn
    from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings
    from muse_desktop.base.events import Done

    store, settings, rose = household_with(tmp_path, tiny_gguf, sam_adapter=gguf_adapters["rslora"])
    asked = own_check.questions_for(store, rose.id)
    assert asked == [("Elderly", "Why do leaves fall?"), ("Elderly", "Is tea good for me?"),
                     ("Child", "What do bees make?"), ("Elderly", "What is a good soup for winter?")]
    check = answered_check(store, settings, rose.id, gguf_adapters["all"], max_tokens=12)
    assert [c["role"] for c in store.own_check(check)["models"]] == ["new", "other", "baseline"]

    shown = own_check.rounds(store, check)
    assert [(r[0]["user_type"], r[0]["question"]) for r in shown] == asked
    assert all(len(r) == 3 for r in shown)
    paths = {str(p) for p in gguf_adapters.values()}
    for answers in shown:  # blind: nothing on screen says whose answer it is
        for answer in answers:
            assert set(answer) == {"id", "round", "position", "user_type", "question", "answer", "best", "rating"}
            assert not paths & {str(v) for v in answer.values()}
    text = {row["id"]: row["answer"] for r in shown for row in r}
    direct = {"new": [AdapterSpec(str(gguf_adapters["all"]), 1.0)],
              "other": [AdapterSpec(str(gguf_adapters["rslora"]), 0.5)], "baseline": []}
    written: dict[str, list[str]] = {}
    for role, specs in direct.items():
        engine = ChatEngine(settings.model_path, EngineSettings(**SETTINGS), specs)  # opened with it, directly
        written[role] = [[e for e in engine.generate(user_type, [Turn("user", question)], None,
                                                     own_check.greedy(12)) if isinstance(e, Done)][-1]
                         .data["text"].strip() for user_type, question in asked]
        engine.close()
    ids = by_role(store, check)
    for role, answers in written.items():
        assert [text[ids[role][n]] for n in range(4)] == answers
    assert all(answer for answers in written.values() for answer in answers)
    for n in range(4):  # each add-on writes its own answer
        assert len({written[role][n] for role in direct}) == 3
    store.close()


def test_the_order_is_shuffled_per_question_and_the_same_for_the_same_seed(tiny_gguf, gguf_adapters, tmp_path):
    store, settings, rose = household_with(tmp_path, tiny_gguf, sam_adapter=gguf_adapters["rslora"])
    first = answered_check(store, settings, rose.id, gguf_adapters["all"], seed=11, max_tokens=2)
    again = answered_check(store, settings, rose.id, gguf_adapters["all"], seed=11, max_tokens=2)
    other = answered_check(store, settings, rose.id, gguf_adapters["all"], seed=12, max_tokens=2)
    assert orders(store, first) == orders(store, again)
    assert len(set(orders(store, first))) > 1  # not the same place for everyone
    assert orders(store, other) != orders(store, first)
    assert all(sorted(order) == [0, 1, 2] for order in orders(store, first))
    store.close()


def pick_roles(store, check, roles: list[str]) -> None:
    ids = by_role(store, check)
    for number, role in enumerate(roles):
        own_check.pick(store, check, number, ids[role][number])


def test_picks_and_ratings_are_stored_and_the_new_add_on_kept_when_it_beats_the_baseline(tiny_gguf, gguf_adapters,
                                                                                          tmp_path):
    store, settings, rose = household_with(tmp_path, tiny_gguf, sam_adapter=gguf_adapters["rslora"])
    check = answered_check(store, settings, rose.id, gguf_adapters["all"], max_tokens=2)
    ids = by_role(store, check)
    own_check.pick(store, check, 0, ids["baseline"][0])
    pick_roles(store, check, ["new", "new", "baseline", "new"])  # the first pick changed: one best a question
    own_check.rate(store, check, ids["new"][0], 5)
    own_check.rate(store, check, ids["new"][1], 4)
    own_check.rate(store, check, ids["baseline"][0], 2)
    shown = {row["id"]: row for r in own_check.rounds(store, check) for row in r}
    assert [shown[ids["new"][n]]["best"] for n in range(4)] == [1, 1, 0, 1]
    assert [shown[ids["baseline"][n]]["best"] for n in range(4)] == [0, 0, 1, 0]
    assert (shown[ids["new"][0]]["rating"], shown[ids["baseline"][0]]["rating"]) == (5, 2)
    with pytest.raises(own_check.OwnCheckError, match="1 to 5"):
        own_check.rate(store, check, ids["new"][0], 6)
    with pytest.raises(own_check.OwnCheckError, match="another question"):
        own_check.pick(store, check, 1, ids["new"][0])
    assert own_check.tally(store, check) == {"new": 3, "other": 0, "baseline": 1}
    assert store.profile(rose.id).adapter_path == ""  # nothing changes before the decision
    decision = own_check.decide(store, check)
    assert decision.kept and not decision.chosen_anyway
    assert decision.message == ("You picked your new model 3 times out of 4, the usual MUsE once, and another "
                                "person's model never. Your new model is now used for you.")
    assert store.profile(rose.id).adapter_path == str(gguf_adapters["all"])
    past = own_check.checks_for(store, rose.id)
    assert [(c["id"], c["tally"], c["decision"]["kept"]) for c in past] == [(check, decision.tally, True)]
    assert past[0]["ratings"] == {"new": 4.5, "other": None, "baseline": 2.0}
    store.close()


@pytest.mark.parametrize("before", ["", "patterns"])
def test_a_tie_or_less_keeps_the_previous_add_on_unless_chosen_anyway(tiny_gguf, gguf_adapters, tmp_path, before):
    previous = str(gguf_adapters[before]) if before else ""
    store, settings, rose = household_with(tmp_path, tiny_gguf, sam_adapter=gguf_adapters["rslora"],
                                           rose_before=previous)
    check = answered_check(store, settings, rose.id, gguf_adapters["all"], max_tokens=2)
    pick_roles(store, check, ["new", "baseline", "other", "baseline"])
    decision = own_check.decide(store, check)
    assert not decision.kept and decision.tally == {"new": 1, "other": 1, "baseline": 2}
    assert store.profile(rose.id).adapter_path == previous  # what she had stays (also "none")
    assert decision.message.startswith("You picked your new model once out of 4, the usual MUsE twice")
    assert ("Your earlier model stays" if before else "MUsE keeps answering you as before") in decision.message
    tie = answered_check(store, settings, rose.id, gguf_adapters["all"], max_tokens=2)
    pick_roles(store, tie, ["new", "baseline", "new", "baseline"])
    assert not own_check.decide(store, tie).kept and store.profile(rose.id).adapter_path == previous
    anyway = own_check.decide(store, tie, choose_anyway=True)
    assert anyway.kept and anyway.chosen_anyway and "anyway" in anyway.message
    assert store.profile(rose.id).adapter_path == str(gguf_adapters["all"])
    assert [c["decision"]["kept"] for c in own_check.checks_for(store, rose.id)] == [True, False]
    store.close()


def test_with_nobody_else_the_check_has_two_answers_and_goes_with_the_person(tiny_gguf, gguf_adapters, tmp_path):
    store, settings, rose = household_with(tmp_path, tiny_gguf)
    check = answered_check(store, settings, rose.id, gguf_adapters["all"], max_tokens=2)
    assert [c["role"] for c in store.own_check(check)["models"]] == ["new", "baseline"]
    assert [len(r) for r in own_check.rounds(store, check)] == [2, 2, 2, 2]
    pick_roles(store, check, ["new", "new", "baseline", "new"])
    decision = own_check.decide(store, check)
    assert decision.message == ("You picked your new model 3 times out of 4, the usual MUsE once. "
                                "Your new model is now used for you.")
    nobody = household.add_person(store, "Guest", settings)
    with pytest.raises(own_check.OwnCheckError, match="not chosen any answers"):
        own_check.new_check(store, settings, nobody.id, gguf_adapters["all"])
    with pytest.raises(own_check.OwnCheckError, match="no model to answer with"):
        own_check.new_check(store, Settings(), rose.id, gguf_adapters["all"])
    household.remove_person(store, rose.id, tmp_path / "data")
    assert store.own_check_results(check) == [] and store.own_checks(rose.id) == []
    store.close()


def test_a_database_from_before_own_checks_keeps_its_comparisons(tmp_path):
    """Schema 5 (the release before): its Compare sessions stay as they were and belong to nobody."""
    import sqlite3

    from muse_desktop.chat.store import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "muse.sqlite3"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:5]:
        db.executescript(script)
    db.executescript(
        "PRAGMA user_version=5;"
        "INSERT INTO raters (name, created_at) VALUES ('Ana', '2026-01-01');"
        "INSERT INTO comparison_sessions (rater_id, models_json, seed, created_at) "
        "VALUES (1, '[{\"name\": \"Base\", \"path\": \"a.gguf\", \"adapter\": \"\"}]', 7, '2026-01-01');"
        "INSERT INTO comparison_answers (session_id, round, position, model_index, user_type, question, answer, "
        "understandability, geniality, applicability, best) VALUES (1, 0, 0, 0, 'Child', 'Why?', 'Because.', 5, 4, 3, 1);")
    db.close()
    store = Store(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    from muse_desktop.evaluation.compare import summarize

    assert summarize(store).best_counts == {"Base": 1}
    assert [tuple(row) for row in store.db.execute("SELECT profile_id, info_json FROM comparison_sessions")] == [
        (None, "{}")]
    with pytest.raises(Exception, match="no check number 1"):
        store.own_check(1)  # a Compare session is nobody's own check
    store.close()


def test_with_muse_installed_as_an_add_on_every_answer_has_it_and_the_baseline_only_it(tiny_gguf, gguf_adapters,
                                                                                      tmp_path):
    store, settings, rose = household_with(tmp_path, tiny_gguf, sam_adapter=gguf_adapters["rslora"])
    settings.adapter_path, settings.adapter_scale = str(gguf_adapters["patterns"]), 0.8
    check = own_check.new_check(store, settings, rose.id, gguf_adapters["all"], seed=1)
    muse = [str(gguf_adapters["patterns"]), 0.8]
    assert {c["role"]: c["adapters"] for c in store.own_check(check)["models"]} == {
        "new": [muse, [str(gguf_adapters["all"]), 1.0]],
        "other": [muse, [str(gguf_adapters["rslora"]), 0.5]],
        "baseline": [muse]}
    store.close()
