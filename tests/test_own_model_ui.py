"""The "Make a model that answers the way I like" window (issue 16, part 3) on the tiny model."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from muse_desktop.base.events import Done
from muse_desktop.household import own_model
import test_own_model as own_tests
from test_own_model import ROSE, TINY, choose

# The other file's fixtures: the tiny F16 model and a store with Rose and Sam.
tiny_f16, household_store = own_tests.tiny_f16, own_tests.household_store


def make_window(qtbot, store, settings, person, tmp_path, **options):
    from muse_desktop.ui.own_model import OwnModelWindow

    window = OwnModelWindow(store, settings, person.id, runs_root=tmp_path / "runs", models_dir=tmp_path / "models",
                            **options)
    qtbot.addWidget(window)
    window.show()
    return window


def test_the_window_shows_the_counts_and_only_ticked_examples_go_to_the_plan(qtbot, household_store, tmp_path):
    from muse_desktop.chat.engine import ChatEngine, EngineSettings

    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE[:5])
    window = make_window(qtbot, store, settings, rose, tmp_path)
    assert window.count_words.text() == "You have chosen 5 answers. Choose 3 more, then MUsE can learn from you."
    assert not window.start_button.isEnabled() and not window.suggest_button.isEnabled()  # no model to write with
    with qtbot.waitSignal(window.choose_more_requested) as asked:
        window.choose_button.click()
    assert asked.args == [rose.id]
    window.close()

    choose(store, rose.id, ROSE[5:])
    engine = ChatEngine(settings.model_path, EngineSettings(context_length=1024, threads=2))
    window = make_window(qtbot, store, settings, rose, tmp_path, engine=engine, suggestions=2)
    assert window.count_words.text() == "You have chosen 8 answers. That is enough: MUsE can learn from you."
    assert window.start_button.isEnabled() and window.suggest_button.isEnabled()
    window.suggest_button.click()  # the tiny model writes (random words: most are filtered out)
    qtbot.waitUntil(lambda: window.worker is None, timeout=60000)
    assert window.status.text().startswith(("MUsE wrote", "MUsE could not write"))
    engine.close()

    # What self-instruct keeps is shown with tick boxes; only the ticked rows reach the plan.
    rows = [{"user_type": "Elderly", "question": f"Is the shop open on day {n}?", "answer": f"Yes, until {n} o'clock."}
            for n in (1, 2, 3)]
    window.suggestions.clear()
    window._suggested(Done("", data={"kept": rows}))
    assert window.suggestions.isVisible() and window.suggestions.count() == 3
    assert all(window.suggestions.item(i).checkState() == Qt.Unchecked for i in range(3))
    window.suggestions.item(1).setCheckState(Qt.Checked)
    assert window.ticked_rows() == [rows[1]]
    base = own_model.training_base(settings, store)
    made = own_model.plan(store, rose, base, window.ticked_rows(), tmp_path / "runs")
    written = [json.loads(line)["question"] for line in made.data_path.read_text().splitlines()]
    assert written == [q for q, _a in ROSE] + ["Is the shop open on day 2?"]
    window.close()


def test_a_run_ends_with_the_add_on_as_candidate_and_the_try_it_signal(qtbot, household_store, tmp_path):
    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE)
    window = make_window(qtbot, store, settings, rose, tmp_path, training_settings={**TINY, "max_steps": 20})
    with qtbot.waitSignal(window.finished_making, timeout=120000):
        window.start_button.click()
        qtbot.waitUntil(lambda: len(window.chart.series["train_loss"]) >= 3, timeout=60000)
        assert window.stop_button.isEnabled() and "step" in window.status.text()  # the live chart and words
    qtbot.waitUntil(lambda: window.worker is None, timeout=30000)
    assert len(window.chart.series["train_loss"]) == 20
    path = own_model.candidate(store, rose.id)
    assert path == window.result_path and path.endswith(".gguf")
    assert store.profile(rose.id).adapter_path == ""  # the blind check decides
    assert window.ready_words.isVisible() and window.try_button.isVisible()
    assert any(e.path == path and e.info["person"] == rose.id for e in store.library())
    with qtbot.waitSignal(window.check_requested) as requested:
        window.try_button.click()
    assert requested.args == [rose.id, path]
    window.close()


def test_stop_then_start_goes_on_from_where_it_stopped(qtbot, household_store, tmp_path):
    store, rose, _sam, settings = household_store
    choose(store, rose.id, ROSE)
    window = make_window(qtbot, store, settings, rose, tmp_path,
                         training_settings={**TINY, "max_steps": 30, "save_steps": 0})
    window.start_button.click()
    qtbot.waitUntil(lambda: len(window.chart.series["train_loss"]) >= 3, timeout=60000)
    window.stop_button.click()
    qtbot.waitUntil(lambda: window.worker is None, timeout=60000)
    assert window.status.text() == "Learning stopped. Press “Start learning” to go on from there."
    assert window.before_box.isVisible() and window.start_button.isEnabled() and not window.result_path
    stopped_at = window.chart.series["train_loss"][-1][0]
    plan = window.plan
    with qtbot.waitSignal(window.finished_making, timeout=120000):
        window.start_button.click()
        assert window.status.text() == "Going on from where MUsE stopped…"
    assert window.plan is plan and window.chart.series["train_loss"][0][0] > stopped_at - 1 > 0
    assert window.chart.series["train_loss"][-1][0] == 30 and own_model.candidate(store, rose.id) == window.result_path
    window.close()
