"""The "Make a model that answers the way I like" window: one guided window for one person.

1. How many answers they have chosen and how many MUsE needs (with the way back to the chat).
2. Optionally, more examples written from their best answers: a list with tick boxes; only the
   ticked ones are used.
3. Start learning: the training runs in the child process on a worker thread, with progress
   words, the live loss chart and Stop.
4. At the end: try it. ``try_it()`` emits ``check_requested(person_id, adapter_path)``; the
   blind check (another window) decides whether the new add-on becomes their default.

The work is :mod:`muse_desktop.household.own_model`'s; this only shows it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.base.errors import MuseError
from muse_desktop.household import own_model
from muse_desktop.ui import widgets
from muse_desktop.ui.chart import LossChart
from muse_desktop.ui.workers import EventWorker, start_worker

READY_WORDS = "Your model is ready. Now try it: you will see answers without names and pick the best."


class OwnModelWindow(QDialog):
    """One person's guided window. The integrator connects ``check_requested`` to the blind check and
    ``choose_more_requested`` to showing the chat in "Choose from 4" mode."""

    check_requested = Signal(int, str)  # person id, the new add-on's path
    choose_more_requested = Signal(int)  # person id
    finished_making = Signal(object)  # the Done of keep_candidate

    def __init__(self, store, settings, person_id: int, engine=None, parent=None, runs_root: Path | None = None,
                 models_dir: Path | None = None, training_settings: dict | None = None,
                 suggestions: int = 8):
        super().__init__(parent)
        self.store, self.settings, self.person_id, self.engine = store, settings, person_id, engine
        self.runs_root, self.models_dir = runs_root, models_dir
        self.training_settings = training_settings or {}
        self.suggestion_count = suggestions
        self.worker: EventWorker | None = None
        self.plan: own_model.OwnPlan | None = None
        self._planned_rows: list[dict] = []
        self.result_path = ""
        self._stage_words = ""
        self.person = store.profile(person_id)
        self.setWindowTitle(f"Make a model that answers the way {self.person.name} likes")
        self.setAccessibleName(self.windowTitle())
        self.setModal(False)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        layout = QVBoxLayout(body)
        layout.setContentsMargins(24, 20, 24, 20)
        layout.setSpacing(12)

        layout.addWidget(widgets.label(f"A model that answers the way you like, {self.person.name}", "heading"))

        # 1. the choices
        self.count_words = widgets.label("", name="How many answers you have chosen")
        self.count_details = widgets.label("", "muted")
        self.choose_button = widgets.button("Choose more answers in the chat",
                                            "Go back to the chat; press “Choose from 4” and pick the best answer",
                                            self.choose_more)
        # Steps 1 and 2 fold away while MUsE learns, so the progress and the chart stay in view.
        self.before_box = QWidget()
        before = QVBoxLayout(self.before_box)
        before.setContentsMargins(0, 0, 0, 0)
        before.setSpacing(12)
        layout.addWidget(self.before_box)
        layout = before
        layout.addWidget(self.count_words)
        layout.addWidget(self.count_details)
        layout.addLayout(_row(self.choose_button))

        # 2. more examples (optional)
        layout.addWidget(_line())
        layout.addWidget(widgets.label("<b>More examples</b> (you can skip this)"))
        self.suggest_button = widgets.button("Make more examples from my best answers",
                                             "MUsE writes new questions and answers like the ones you chose",
                                             self.suggest)
        layout.addLayout(_row(self.suggest_button))
        self.suggestions = QListWidget()
        self.suggestions.setAccessibleName("New examples: tick the ones that sound right")
        self.suggestions.setMinimumHeight(120)
        self.suggestions.setWordWrap(True)
        self.suggestions.hide()
        self.suggest_hint = widgets.label("Tick the ones that sound like you. Only ticked ones are used.", "muted")
        self.suggest_hint.hide()
        layout.addWidget(self.suggest_hint)
        layout.addWidget(self.suggestions)
        layout.addWidget(_line())
        layout = body.layout()

        # 3. learning
        self.start_button = widgets.button("Start learning", "MUsE learns from your answers; this takes a while",
                                           self.start, primary=True)
        self.stop_button = widgets.button("Stop", "Stop learning (your answers are kept)", self.stop)
        self.stop_button.setEnabled(False)
        layout.addLayout(_row(self.start_button, self.stop_button))
        self.status = widgets.label("", name="What MUsE is doing")
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("How far learning has come")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.hide()
        layout.addWidget(self.progress)
        # One line in plain words: a person's few answers leave nothing to validate on.
        self.chart = LossChart({"train_loss": "How far MUsE is from your answers"})
        self.chart.setMinimumHeight(200)
        self.chart.setAccessibleName("How well MUsE knows your answers (lower is better)")
        self.chart.hide()
        layout.addWidget(self.chart, 4)  # the chart takes most of the room there is
        self.chart_hint = widgets.label("The line goes down as MUsE learns your answers.", "muted")
        self.chart_hint.hide()
        layout.addWidget(self.chart_hint)

        # 4. the end
        self.ready_words = widgets.label(READY_WORDS, name="Your model is ready")
        self.ready_words.hide()
        self.try_button = widgets.button("Try it", "See answers without names and pick the best one", self.try_it,
                                         primary=True)
        self.try_button.hide()
        layout.addWidget(self.ready_words)
        layout.addLayout(_row(self.try_button))
        layout.addStretch(1)
        close = widgets.button("Close", "Close this window", self.close)
        layout.addLayout(_row(close))
        self.refresh()

    # -- 1 -------------------------------------------------------------------------------------

    def refresh(self) -> None:
        self.readiness = own_model.readiness(self.store, self.person_id)
        self.count_words.setText(self.readiness.words)
        self.count_details.setText(self.readiness.details)
        busy = self.worker is not None
        self.start_button.setEnabled(self.readiness.ready and not busy)
        self.suggest_button.setEnabled(self.readiness.choices >= 2 and self.engine is not None and not busy)

    def choose_more(self) -> None:
        self.choose_more_requested.emit(self.person_id)

    # -- 2 -------------------------------------------------------------------------------------

    def suggest(self) -> None:
        try:
            events = own_model.suggest_more(self.store, self.person_id, self.engine, self.suggestion_count)
        except MuseError as exc:
            self.status.setText(exc.for_person())
            return
        self.status.setText("MUsE is writing new examples like your best answers…")
        self._busy(True)
        start_worker(self, lambda token: _with_cancel(events, token), self._idle, done=self._suggested,
                     failed=self._failed, progress=self._suggest_progress)

    def _suggest_progress(self, done: float, total: float, _unit: str, message: str) -> None:
        self.status.setText(f"Writing example {done:g} of {total:g} ({message})")

    def _suggested(self, event) -> None:
        kept = event.data.get("kept", [])
        for row in kept:
            item = QListWidgetItem(f"{row['question']}\n→ {row['answer']}")
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Unchecked)
            item.setData(Qt.UserRole, row)
            item.setData(Qt.AccessibleTextRole, f"Question: {row['question']}. Answer: {row['answer']}")
            self.suggestions.addItem(item)
        self.suggestions.setVisible(self.suggestions.count() > 0)
        self.suggest_hint.setVisible(self.suggestions.count() > 0)
        self.status.setText(f"MUsE wrote {len(kept)} new examples. Tick the good ones." if kept else
                            "MUsE could not write good new examples this time. You can start learning anyway.")

    def ticked_rows(self) -> list[dict]:
        """The suggestions the person ticked: the only ones that go to the plan."""
        return [self.suggestions.item(i).data(Qt.UserRole) for i in range(self.suggestions.count())
                if self.suggestions.item(i).checkState() == Qt.Checked]

    # -- 3 -------------------------------------------------------------------------------------

    def start(self) -> None:
        ticked = self.ticked_rows()
        # After a Stop, the same plan goes on from its last checkpoint (unless the examples changed).
        going_on = self.plan is not None and not self.result_path and ticked == self._planned_rows
        if not going_on:
            try:
                base = own_model.training_base(self.settings, self.store)
                self.plan = own_model.plan(self.store, self.person, base, ticked, self.runs_root,
                                           settings=self.training_settings)
            except MuseError as exc:
                self.status.setText(exc.for_person())
                return
            self._planned_rows = ticked
        plan, models_dir = self.plan, self.models_dir
        self.chart.clear()
        self.chart.show()
        self.chart_hint.show()
        self.progress.show()
        self.progress.setRange(0, 0)
        self.ready_words.hide()
        self.try_button.hide()
        self.status.setText("Going on from where MUsE stopped…" if going_on else
                            f"Getting ready to learn from {plan.examples} examples…")
        self.before_box.hide()
        self._busy(True)
        start_worker(self, lambda token: own_model.make_model(plan, None, token, models_dir=models_dir), self._idle,
                     done=self._made, failed=self._failed, progress=self._progress, metric=self._metric)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Stopping…")

    def _progress(self, done: float, total: float, unit: str, message: str) -> None:
        if unit == "stages":
            self._stage_words = message
            self.status.setText(message)
        elif unit == "steps" and total > 0:
            self.chart.total_steps = int(total)
            self.progress.setRange(0, int(total))
            self.progress.setValue(int(done))
            self.status.setText(f"{self._stage_words} · step {done:g} of {total:g}")

    def _metric(self, name: str, value: float, step: int) -> None:
        if name in ("train_loss", "dpo_loss") and not self.chart.series["train_loss"]:
            self.scroll.ensureWidgetVisible(self.chart, 0, 0)  # the first point: bring the chart into view
        if name == "train_loss":
            self.chart.add("train_loss", step, value)
        elif name == "dpo_loss":  # the second stage's loss on the same chart
            self.chart.add("train_loss", step, value)

    def _made(self, event) -> None:
        done = own_model.keep_candidate(self.store, self.plan, event)  # on the thread that owns the store
        self.result_path = done.path
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText("")
        self.ready_words.show()
        self.try_button.show()
        self.try_button.setFocus()
        self.scroll.ensureWidgetVisible(self.try_button)
        widgets.announce(self, READY_WORDS)
        self.finished_making.emit(done)

    # -- 4 -------------------------------------------------------------------------------------

    def try_it(self) -> None:
        if self.result_path:
            self.check_requested.emit(self.person_id, self.result_path)

    # -- shared -------------------------------------------------------------------------------------

    def _failed(self, message: str) -> None:
        stopped = self.worker is not None and self.worker.token.cancelled
        self.status.setText("Learning stopped. Press “Start learning” to go on from there." if stopped else message)
        self.progress.setRange(0, 1)

    def _busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.start_button.setEnabled(not busy and self.readiness.ready)
        self.suggest_button.setEnabled(not busy and self.readiness.choices >= 2 and self.engine is not None)
        self.choose_button.setEnabled(not busy)

    def _idle(self) -> None:
        self._busy(False)
        if not self.result_path:  # stopped or failed: the first steps come back; when ready, "Try it" stays up
            self.before_box.show()
        self.refresh()

    def _fit_chart(self) -> None:
        # Room for the chart's words and a readable curve at every text size (200 % too).
        self.chart.setMinimumHeight(max(200, 7 * self.chart.fontMetrics().height()))

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().changeEvent(event)
        if event.type() in (QEvent.StyleChange, QEvent.FontChange):
            self._fit_chart()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        self._fit_chart()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.worker is not None:  # the training child saves a checkpoint and stops
            self.worker.cancel()
            self.worker.thread.wait(60000)
        super().closeEvent(event)


def _with_cancel(events, token):
    """Read ``events`` until the token says stop (self-instruct checks its own token between replies)."""
    for event in events:
        token.check()
        yield event


def _row(*items) -> QHBoxLayout:
    row = QHBoxLayout()
    for item in items:
        row.addWidget(item)
    row.addStretch(1)
    return row


def _line() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.HLine)
    return line
