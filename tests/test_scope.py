"""Kiosk mode: the scope guard's metrics, its numpy scoring against scikit-learn, and the refusal in the chat."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import museum_questions

from muse_desktop.household.scope import MIN_PER_CLASS, ScopeError, ScopeGuard, out_of_scope_questions, train_scope_guard


def test_the_guard_reports_held_out_metrics_and_refuses_off_topic_questions(museum_guard):
    report = museum_guard
    assert report.n_test >= 40 and report.f1 > 0.9 and report.good_enough
    assert "precision" in report.summary() and "recall" in report.summary() and "F1" in report.summary()
    guard = report.guard
    assert guard.allows("Where is the golden mask of Tutankhamun kept?")
    assert not guard.allows("How do I bake chocolate chip cookies?")
    assert not guard.allows("Who won the football match last night?")
    assert guard.refusal().startswith("I'm sorry, I can only help with questions about ancient Egypt")


def test_numpy_scoring_equals_scikit_learn():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    inside, outside = museum_questions(), out_of_scope_questions()
    report = train_scope_guard(inside, outside, seed=3)
    texts, labels = inside + outside, [1] * len(inside) + [0] * len(outside)
    train_x, test_x, train_y, _ = train_test_split(texts, labels, test_size=0.25, random_state=3, stratify=labels)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=3)
    model.fit(vectorizer.fit_transform(train_x), train_y)
    probe = test_x + ["An unseen question about Khufu's pyramid?", "", "!!!"]
    expected = model.predict_proba(vectorizer.transform(probe))[:, 1]
    np.testing.assert_allclose(report.guard.in_scope_probability(probe), expected, rtol=1e-9, atol=1e-12)


def test_too_little_data_is_refused():
    with pytest.raises(ScopeError, match=f"at least {MIN_PER_CLASS} of each"):
        train_scope_guard(museum_questions()[:5])


def test_the_guard_survives_saving_and_loading(tmp_path, museum_guard):
    guard = museum_guard.guard
    path = guard.save(tmp_path / "guard.json")
    loaded = ScopeGuard.load(path)
    assert loaded.allows("Who was Hatshepsut?") and loaded.metrics["f1"] == guard.metrics["f1"]
    assert ScopeGuard.load(tmp_path / "missing.json") is None


def test_kiosk_mode_from_the_command_line(tmp_path, capsys):
    from muse_desktop.cli import main
    from muse_desktop.household.settings import load_settings

    data = tmp_path / "museum.jsonl"
    data.write_text("".join(json.dumps({"user_type": "Child", "question": q, "answer": "It is in room 3."}) + "\n"
                            for q in museum_questions()))
    assert main(["kiosk", "on"]) == 2  # nothing trained yet
    assert main(["kiosk", "train", str(data), "--topic", "ancient Egypt"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "Good enough to switch on" in out
    assert main(["kiosk", "on"]) == 0 and load_settings().settings.kiosk_mode
    assert main(["kiosk", "check", "What is the weather tomorrow?"]) == 0
    assert "refused: I'm sorry" in capsys.readouterr().out
    assert main(["kiosk", "off"]) == 0 and not load_settings().settings.kiosk_mode


def test_an_off_topic_question_is_refused_without_calling_the_model(qtbot, tiny_gguf, museum_guard):
    from helpers import window_with_model

    from muse_desktop.models.demo_model import Variant
    from muse_desktop.household.settings import Settings
    from muse_desktop.chat.store import Store
    from muse_desktop.ui.chat import Bubble

    museum_guard.guard.save()
    store = Store()
    win = window_with_model(qtbot, Settings(user_type_id="child", kiosk_mode=True), tiny_gguf[Variant.MINI_4K],
                            store=store, show_chat=False)

    def no_model(*_args, **_kwargs):
        raise AssertionError("the model was asked an off-topic question")

    real_generate = win.chat.engine.generate
    win.chat.engine.generate = no_model
    win.chat.input.setText("How do I bake chocolate chip cookies?")
    win.chat.send()
    bubbles = win.chat.findChildren(Bubble)
    assert bubbles[-1].text().startswith("I'm sorry, I can only help with questions about ancient Egypt")
    saved = store.messages(store.conversations()[0].id)
    assert saved[-1].settings == {"refused": "off-topic"}
    win.chat.engine.generate = real_generate  # an in-scope question goes to the model
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.input.setText("Where is the tomb of Khufu?")
        win.chat.send()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert len(store.messages(store.conversations()[0].id)) == 4
    win.close()
    store.close()


def test_the_caregiver_sees_the_metrics_before_switching_kiosk_mode_on(qtbot, tmp_path):
    from muse_desktop.household.settings import Settings, load_settings
    from muse_desktop.ui.app import MainWindow

    data = tmp_path / "museum.jsonl"
    data.write_text("".join(json.dumps({"user_type": "Child", "question": q, "answer": "Room 3."}) + "\n"
                            for q in museum_questions()))
    few = tmp_path / "few.jsonl"
    few.write_text(json.dumps({"user_type": "Child", "question": "Who was Khufu?", "answer": "A king."}) + "\n")
    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    dialog = win.open_kiosk()
    assert not dialog.on_button.isEnabled()
    dialog.dataset.setText(str(few))
    dialog.check()
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=30000)
    assert "at least 20 of each" in dialog.result.text() and not dialog.on_button.isEnabled()
    dialog.dataset.setText(str(data))
    dialog.topic.setText("ancient Egypt")
    dialog.check()
    qtbot.waitUntil(lambda: dialog.worker is None, timeout=30000)
    assert "precision" in dialog.result.text() and "F1" in dialog.result.text()
    assert dialog.on_button.isEnabled()
    dialog.on_button.click()
    assert load_settings().settings.kiosk_mode and ScopeGuard.load() is not None
    win.set_pin("2468")
    win.lock_now()
    assert not win.kiosk_action.isEnabled() and win.open_kiosk() is None
    dialog.close()
    win.close()


def test_the_guard_is_read_once_and_again_only_when_its_file_changes(tmp_path, monkeypatch):
    from muse_desktop.household import scope
    from muse_desktop.household.scope import check_question

    reads = []
    real_load = ScopeGuard.load.__func__
    monkeypatch.setattr(ScopeGuard, "load", classmethod(lambda cls, path=None: reads.append(path)
                                                        or real_load(cls, path)))
    monkeypatch.setattr(scope, "_loaded", scope._LoadedGuard())
    path = train_scope_guard(museum_questions(), topic="ancient Egypt").guard.save(tmp_path / "guard.json")
    for question in ("Who was Hatshepsut?", "Where is the tomb of Khufu?", "How do I bake cookies?"):
        check_question(question, True, path)
    assert len(reads) == 1  # three questions, one read
    assert check_question("Who was Hatshepsut?", True, path).allowed
    # Made again for another topic: the next question uses the new guard.
    train_scope_guard(museum_questions(), topic="the pharaohs").guard.save(path)
    refused = check_question("How do I bake cookies?", True, path)
    assert len(reads) == 2 and "the pharaohs" in refused.refusal
    # Damaged in place, or removed: everything is refused at once (fail closed).
    path.write_text("{ not json")
    assert check_question("Who was Hatshepsut?", True, path).problem
    path.unlink()
    assert check_question("Who was Hatshepsut?", True, path).problem
    assert check_question("Who was Hatshepsut?", False, path).allowed  # kiosk mode off: no guard needed
