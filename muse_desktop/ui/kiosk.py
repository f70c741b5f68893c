"""The caregiver's kiosk setup: train the scope guard, see its held-out metrics, then switch it on;
and whether people may switch between the people on the computer while MUsE is locked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QDialog, QFileDialog, QHBoxLayout, QLineEdit, QVBoxLayout

from muse_desktop.base.events import Done
from muse_desktop.ui import widgets
from muse_desktop.ui.workers import EventWorker, start_worker


SWITCHING = "Let people switch between the people on this computer while locked"


class KioskDialog(QDialog):
    def __init__(self, parent, settings, on_change):
        super().__init__(parent)
        self.setWindowTitle("Kiosk mode")
        self.settings, self.on_change = settings, on_change
        self.worker: EventWorker | None = None
        self.report = None
        layout = QVBoxLayout(self)
        layout.addWidget(widgets.label(
            "In kiosk mode, questions about other things get a kind refusal and the model is not asked. "
            "Give the questions this kiosk is for (a dataset), and what it is about."))
        row = QHBoxLayout()
        self.dataset = QLineEdit()
        self.dataset.setAccessibleName("Dataset with the kiosk's questions")
        self.dataset.setPlaceholderText("A dataset (.jsonl or .csv) whose questions are in scope")
        row.addWidget(self.dataset, 1)
        row.addWidget(widgets.button("Choose…", "Choose the dataset", self.choose))
        layout.addLayout(row)
        self.topic = QLineEdit()
        self.topic.setAccessibleName("What the kiosk is about")
        self.topic.setPlaceholderText("What it is about, e.g. ancient Egypt")
        layout.addWidget(self.topic)
        self.check_button = widgets.button("Check how well it works", "Train the guard and measure it", self.check)
        layout.addWidget(self.check_button)
        self.result = widgets.label(name="How well the guard works")
        layout.addWidget(self.result)
        row = QHBoxLayout()
        self.on_button = widgets.button("Switch kiosk mode on", "Switch kiosk mode on", self.switch_on, primary=True)
        self.off_button = widgets.button("Switch kiosk mode off", "Switch kiosk mode off", self.switch_off)
        self.on_button.setEnabled(False)
        self.off_button.setEnabled(settings.kiosk_mode)
        row.addWidget(self.on_button)
        row.addWidget(self.off_button)
        layout.addLayout(row)
        # Locking fixes the person using MUsE, unless this is ticked (kept in the lock's own file).
        self.switching = QCheckBox(SWITCHING)
        self.switching.setChecked(settings.lock_allows_switching)
        self.switching.setAccessibleDescription("While locked, nobody can be added or removed either way.")
        self.switching.toggled.connect(self.allow_switching)
        layout.addWidget(self.switching)
        if importlib.util.find_spec("sklearn") is None:
            self.check_button.setEnabled(False)
            self.result.setText("Training the guard needs scikit-learn (part of MUsE Studio / the training extra). "
                                "A guard trained elsewhere can still be used.")

    def choose(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose the dataset", str(Path.home()), "Datasets (*.jsonl *.csv)")
        if path:
            self.dataset.setText(path)

    def check(self) -> None:
        path, topic = self.dataset.text().strip(), self.topic.text().strip() or "this topic"

        def events(_token):
            from muse_desktop.data.datasets import load_dataset
            from muse_desktop.household.scope import train_scope_guard

            report = load_dataset(path)
            questions = [e.turns[0].content for e in report.examples if e.turns]
            yield Done("checked", data={"report": train_scope_guard(questions, topic=topic)})

        def done(event: Done) -> None:
            self.report = event.data["report"]
            verdict = ("Good enough to switch on." if self.report.good_enough else
                       "Not good enough to switch on (F1 below 0.8): add more questions.")
            self.result.setText(f"{self.report.summary()} {verdict}")
            self.on_button.setEnabled(self.report.good_enough)

        self.result.setText("Training and measuring on questions it has not seen…")
        self.check_button.setEnabled(False)
        start_worker(self, events, self._finished, done=done, failed=self.result.setText)

    def _finished(self) -> None:
        self.check_button.setEnabled(True)

    def switch_on(self) -> None:
        if self.report is None or not self.report.good_enough:
            return
        self.report.guard.save()
        self.settings.kiosk_mode = True
        self.on_change()
        self.off_button.setEnabled(True)
        self.result.setText(self.result.text() + " Kiosk mode is on.")

    def switch_off(self) -> None:
        self.settings.kiosk_mode = False
        self.on_change()
        self.off_button.setEnabled(False)
        self.result.setText("Kiosk mode is off.")

    def allow_switching(self, on: bool) -> None:
        from muse_desktop.household import lock

        if lock.is_locked(self.settings):  # the caregiver's settings are closed while locked
            self.switching.setChecked(self.settings.lock_allows_switching)
            return
        self.settings.lock_allows_switching = on
        self.on_change()
