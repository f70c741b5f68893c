"""The Trainer tab: data, base model, recipe, a live run with its loss curves, past runs, export, chat."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.base.events import Done
from muse_desktop.base.paths import user_dirs
from muse_desktop.household.settings import Settings
from muse_desktop.training.runfolder import duration
from muse_desktop.ui import widgets
from muse_desktop.ui.chart import LossChart
from muse_desktop.ui.workers import EventWorker, start_worker

FORMATS = (("", "Find out by itself"), ("muse", "MUsE: user type, question, answer"),
           ("alpaca", "Alpaca: instruction, input, output"), ("messages", "Chat transcripts (messages)"),
           ("text", "Plain text"))


def runs_dir() -> Path:
    from muse_desktop.training.runfolder import runs_root

    return runs_root()


def run_status(run_dir: Path) -> str:
    """One line about a past run (the RunFolder's own words)."""
    from muse_desktop.training.runfolder import RunFolder

    return RunFolder(run_dir).describe()


def run_details(run_dir: Path) -> str:
    """A past run's settings and results (with the before/after answers) as plain text."""
    from muse_desktop.training.runfolder import RunFolder

    return RunFolder(run_dir).details()


class TrainerPage(QWidget):
    chat_requested = Signal(str, str)  # model path, adapter path ("" for none)

    def __init__(self, settings: Settings, store):
        super().__init__()
        self.settings = settings
        self.store = store
        self.worker: EventWorker | None = None
        self.run_dir: Path | None = None
        self.exported: tuple[str, str] | None = None
        self._then = None  # what to start once the current work has finished
        self._progress_start: tuple[float, float] | None = None
        self.available = importlib.util.find_spec("torch") is not None
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(widgets.label("Teach the model with your own examples", "heading"))
        if not self.available:
            layout.addWidget(widgets.label(
                "The Trainer needs the training part of MUsE Desktop, which this copy does not have. Ask the "
                "person who set up MUsE to install it with the Trainer (the README's first steps say how); "
                "your conversations stay as they are.", "error", "Problem"))

        # 1. data
        data = QGroupBox("1. Your examples")
        form = QVBoxLayout(data)
        self.dataset = QLineEdit()
        form.addWidget(widgets.field_label("Dataset file", self.dataset))
        row = QHBoxLayout()
        self.dataset.setPlaceholderText("A .jsonl, .csv, .parquet or .txt file")
        row.addWidget(self.dataset, 1)
        row.addWidget(widgets.button("Choose…", "Choose a dataset file", self.choose_dataset))
        form.addLayout(row)
        self.format = widgets.ChoiceBox()
        form.addWidget(widgets.field_label("Dataset format", self.format))
        for value, text in FORMATS:
            self.format.addItem(text, value)
        form.addWidget(self.format)
        row = widgets.FlowLayout()  # buttons wrap to a new line at large text, never off the page
        self.check_button = widgets.button("Check the examples", "Check the dataset for problems", self.check_data)
        row.addWidget(self.check_button)
        form.addLayout(row)
        self.data_tools_button = widgets.button("Make examples…", "Make training examples from documents or "
                                                "from a few of yours", self.open_data_tools)
        row.addWidget(self.data_tools_button)
        row = widgets.FlowLayout()
        self.get_data_button = widgets.button("Get the MUsE dataset", "Download the MUsE examples and check them",
                                              lambda: self.get_muse_dataset())  # not clicked's bool as `then`
        self.reproduce_button = widgets.button(
            "Reproduce MUsE", "Train MUsE again: the MUsE dataset with the MUsE-3 recipe", self.reproduce_muse)
        self.reproduce_button.setToolTip("The MUsE examples with the MUsE-3 recipe, as in the study: one pass, "
                                         "3 examples a step, learning rate 1e-4 down to 1e-6.")
        row.addWidget(self.get_data_button)
        row.addWidget(self.reproduce_button)
        form.addLayout(row)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setAccessibleName("Dataset check")
        self.report.setPlaceholderText("Choose a file and press “Check the examples”: every row that cannot be "
                                       "used is listed with its line number.")
        self.report.setMinimumHeight(110)
        form.addWidget(self.report)
        layout.addWidget(data)

        # 2. base model
        base = QGroupBox("2. The model to start from")
        form = QVBoxLayout(base)
        self.base_model = QLineEdit(self._default_base())
        form.addWidget(widgets.field_label("Base model folder", self.base_model))
        row = QHBoxLayout()
        form.addLayout(row)
        self.base_model.setPlaceholderText("A folder with config.json and .safetensors files")
        row.addWidget(self.base_model, 1)
        row.addWidget(widgets.button("Choose…", "Choose the base model folder", self.choose_base))
        layout.addWidget(base)

        # 3. recipe
        recipe = QGroupBox("3. How to learn")
        form = QVBoxLayout(recipe)
        self.preset = widgets.ChoiceBox()
        form.addWidget(widgets.field_label("Recipe", self.preset))
        form.addWidget(self.preset)
        row = widgets.FlowLayout()
        self.hardware_button = widgets.button("Check this computer", "Check which recipe fits this computer",
                                              self.check_hardware)
        row.addWidget(self.hardware_button)
        form.addLayout(row)
        self.preset_help = widgets.label(style="muted", name="What this recipe does")
        form.addWidget(self.preset_help)
        self.advice = widgets.label(name="Advice for this computer")
        form.addWidget(self.advice)
        self.advanced_toggle = widgets.button("Show advanced options", "Show or hide advanced options")
        self.advanced_toggle.setCheckable(True)
        form.addWidget(self.advanced_toggle, 0, Qt.AlignLeft)
        self.advanced = QWidget()
        self.advanced.setVisible(False)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        self.options: dict[str, QWidget] = {}
        grid = QFormLayout(self.advanced)
        grid.setRowWrapPolicy(QFormLayout.WrapLongRows)  # at large text a label goes above its field
        for key, label, widget in self._option_widgets():
            widget.setAccessibleName(label)
            grid.addRow(label, widget)
            self.options[key] = widget
        form.addWidget(self.advanced)
        layout.addWidget(recipe)
        from muse_desktop.training.config import load_preset, preset_names

        self._presets = {name: load_preset(name) for name in preset_names()}
        for name in self._presets:
            self.preset.addItem(name, name)
        self.preset.currentIndexChanged.connect(self._preset_changed)
        self.preset.setCurrentIndex(list(self._presets).index("muse-3"))
        self._preset_changed()

        # 4. the run
        run = QGroupBox("4. Learn")
        form = QVBoxLayout(run)
        row = widgets.FlowLayout()
        self.start_button = widgets.button("Start", "Start training", self.start, primary=True)
        self.cancel_button = widgets.button("Cancel", "Cancel training (it can be resumed)", self.cancel)
        self.resume_button = widgets.button("Resume", "Resume the selected run", self.resume)
        self.dpo_button = widgets.button("Learn from preferences (DPO)",
                                         "Train on the answers people marked best and worst in the chat",
                                         self.start_dpo)
        for button in (self.start_button, self.cancel_button, self.resume_button, self.dpo_button):
            row.addWidget(button)
        form.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Training progress")
        self.progress.setTextVisible(False)
        self.progress.setMinimumHeight(24)
        form.addWidget(self.progress)
        self.status = widgets.label(style="muted", name="Training status")
        form.addWidget(self.status)
        self.chart = LossChart()
        form.addWidget(self.chart)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setAccessibleName("Training log")
        self.log.setMinimumHeight(100)
        form.addWidget(self.log)
        layout.addWidget(run)

        # 5. past runs
        past = QGroupBox("Past runs")
        form = QVBoxLayout(past)
        self.runs = QListWidget()
        self.runs.setAccessibleName("Past training runs")
        self.runs.setWordWrap(True)
        self.runs.setMinimumHeight(120)
        self.runs.currentItemChanged.connect(self._run_selected)
        form.addWidget(self.runs)
        row = widgets.FlowLayout()
        self.export_button = widgets.button("Make a chat model", "Export: merge and make a Q4_K_M model",
                                            lambda: self.export("merge"))
        self.export_adapter_button = widgets.button("Make a small add-on", "Export as a GGUF LoRA adapter",
                                                    lambda: self.export("adapter"))
        self.chat_button = widgets.button("Chat with this model", "Chat with the exported model", self.chat)
        for button in (self.export_button, self.export_adapter_button, self.chat_button):
            row.addWidget(button)
        form.addLayout(row)
        layout.addWidget(past)
        self.refresh_runs()
        self._update_buttons()

    # -- choices ---------------------------------------------------------------------------

    @staticmethod
    def _default_base() -> str:
        from muse_desktop.models.getmuse import BASE_REPO

        folder = user_dirs().models / BASE_REPO.split("/")[-1]
        return str(folder) if (folder / "config.json").is_file() else ""

    def _option_widgets(self):
        def spin(low, high, step=1):
            box = QSpinBox()
            box.setRange(low, high)
            box.setSingleStep(step)
            return box

        def real(low, high, decimals, step):
            box = QDoubleSpinBox()
            box.setRange(low, high)
            box.setDecimals(decimals)
            box.setSingleStep(step)
            return box

        return [
            ("epochs", "Passes over the data (epochs)", real(0.1, 100, 1, 0.5)),
            ("max_steps", "Stop after this many steps (0: use epochs)", spin(0, 10**7, 10)),
            ("learning_rate", "Learning rate", QLineEdit()),
            ("batch_size", "Examples per step (batch size)", spin(1, 512)),
            ("gradient_accumulation", "Steps added up before each update", spin(1, 512)),
            ("seq_len", "Longest example in tokens", spin(32, 131072, 256)),
            ("gradient_checkpointing", "Save memory (gradient checkpointing)", QCheckBox()),
            ("train_last_layers", "Train only the last layers (0: all)", spin(0, 200)),
            ("lora_r", "LoRA rank", spin(1, 1024)),
            ("lora_alpha", "LoRA alpha", real(0.1, 4096, 1, 1)),
            ("early_stopping_patience", "Stop when validation stops improving after (0: never)", spin(0, 1000)),
            ("target_loss", "Stop at this training loss (0: never)", real(0, 100, 3, 0.1)),
            ("save_steps", "Save a checkpoint every (steps)", spin(1, 10**6, 10)),
            ("seed", "Random seed", spin(0, 2**31 - 1)),
        ]

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.advanced_toggle.setText("Hide advanced options" if shown else "Show advanced options")

    def _preset_changed(self, *_args) -> None:
        preset = self._presets[self.preset.currentData()]
        self.preset_help.setText(preset.description)
        for key, widget in self.options.items():
            value = getattr(preset, key)
            if key == "train_last_layers":
                from muse_desktop.training.plan import last_layers_shown

                value = last_layers_shown(value)
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QLineEdit):
                widget.setText(f"{value:g}")
            else:
                widget.setValue(value)

    def open_data_tools(self):
        from muse_desktop.ui.datatools import DataToolsDialog

        dialog = DataToolsDialog(self)
        dialog.setStyleSheet(self.window().styleSheet())
        dialog.resize(900, 800)
        dialog.show()
        return dialog

    def get_muse_dataset(self, then=None) -> None:
        """Download the published MUsE examples (or find them already here) and check them."""
        from muse_desktop.data.getdataset import MUSE_DATASET, get_dataset

        endpoint = self.settings.hub_endpoint or None

        def done(event: Done) -> None:
            self.dataset.setText(event.path)
            self.format.setCurrentIndex(self.format.findData(""))
            self._say(event.message)
            if then is not None:
                self._then = then
            else:
                self._then = self.check_data

        self._say(f"Getting the MUsE dataset ({MUSE_DATASET})…")
        self._run(lambda token: get_dataset(MUSE_DATASET, endpoint=endpoint, cancel=token), on_done=done,
                  on_failed=self._say)

    def _say(self, text: str) -> None:
        """Beside the data buttons, where the person is looking, and in the run's status."""
        self.report.setPlainText(text)
        self.status.setText(text)

    def reproduce_muse(self) -> None:
        """One click: the MUsE dataset, the MUsE-3 recipe, the base MUsE was trained on; then Start."""
        from muse_desktop.models.getmuse import BASE_REPO

        base = self._default_base()
        if not base:
            self._say(f"First get the model MUsE starts from ({BASE_REPO.split('/')[-1]}): in the Chat, "
                      "press “Change model”, then “Get MUsE”. Then press “Reproduce MUsE” again.")
            return
        self.base_model.setText(base)
        self.preset.setCurrentIndex(self.preset.findData("muse-3"))
        self._preset_changed()
        self.get_muse_dataset(then=self.start)

    def choose_dataset(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a dataset", str(Path.home()),
                                              "Datasets (*.jsonl *.json *.csv *.parquet *.pkl *.pickle *.txt *.md)")
        if path:
            self.dataset.setText(path)
            self.check_data()

    def choose_base(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose the base model folder", str(Path.home()))
        if path:
            self.base_model.setText(path)

    def config(self):
        """The settings on screen as a TrainConfig (checked when a run is made of it)."""
        from muse_desktop.training.config import config_from_dict

        return config_from_dict(self.config_data())

    def config_data(self) -> dict:
        """The settings on screen as the mapping a config file would hold."""
        preset_name = self.preset.currentData()
        preset = self._presets[preset_name]
        data = {"preset": preset_name, "base_model": self.base_model.text().strip(),
                "dataset": self.dataset.text().strip(), "dataset_format": self.format.currentData()}
        for key, widget in self.options.items():
            if isinstance(widget, QCheckBox):
                value = widget.isChecked()
            elif isinstance(widget, QLineEdit):
                value = widget.text().strip()
            else:
                value = widget.value()
            if key == "train_last_layers":
                from muse_desktop.training.plan import last_layers_chosen

                value = last_layers_chosen(value, preset.train_last_layers)
            data[key] = value
        return data

    # -- checks ----------------------------------------------------------------------------

    def check_data(self) -> None:
        path, base, fmt = self.dataset.text().strip(), self.base_model.text().strip(), self.format.currentData()
        if not path:
            self.report.setPlainText("Choose a dataset file first.")
            return
        # Everything the worker needs is read here: widgets belong to the GUI thread.
        seq_len = self.options["seq_len"].value()
        config = self.config_or_preset()

        def events(_token):
            from muse_desktop.training.plan import dataset_report

            yield Done(dataset_report(path, fmt, base, config, seq_len))

        self.report.setPlainText("Checking…")
        self._run(events, on_done=lambda event: self.report.setPlainText(event.message),
                  on_failed=self.report.setPlainText)

    def config_or_preset(self):
        try:
            return self.config().validate()
        except ValueError:
            return self._presets[self.preset.currentData()]

    def check_hardware(self) -> None:
        base = self.base_model.text().strip()
        seq_len = self.options["seq_len"].value()

        def events(_token):
            from muse_desktop.training.hardware import probe, read_model_config, recommend

            hw = probe(measure=False)
            if not base:
                yield Done(f"This computer: {hw.describe()}. Choose the base model to see which recipe fits.")
                return
            advice = recommend(read_model_config(base), hw, seq_len)
            yield Done(advice.message, data={"preset": advice.preset, "overrides": advice.overrides})

        def show(event: Done) -> None:
            self.advice.setText(event.message)
            preset = event.data.get("preset")
            if preset:
                self.preset.setCurrentIndex(self.preset.findData(preset))
                for key, value in event.data.get("overrides", {}).items():
                    widget = self.options[key]
                    widget.setChecked(value) if isinstance(widget, QCheckBox) else widget.setValue(value)

        self.advice.setText("Checking this computer…")
        self._run(events, on_done=show, on_failed=self.advice.setText)

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        from muse_desktop.training.child import default_run_dir, run_training
        from muse_desktop.training.runfolder import RunFolder

        try:
            config = self.config()
            run = RunFolder.create(default_run_dir(config), config)  # checked once, here, and stored
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        self._begin(run.path, f"Starting {run.name}…")
        self._run(lambda token: run_training(None, run.path, token), on_done=self._trained)

    def start_dpo(self) -> None:
        """A DPO stage on the preferences recorded in the chat, with the recipe's LoRA settings."""
        from muse_desktop.training.child import run_training
        from muse_desktop.training.plan import dpo_run

        try:
            run, count = dpo_run(self.config_data(), self.store)
        except (OSError, ValueError) as exc:
            self.status.setText(str(exc))
            return
        self._begin(run.path, f"Learning from {count} preferences (DPO)…")
        self._run(lambda token: run_training(None, run.path, token), on_done=self._trained)

    def resume(self) -> None:
        from muse_desktop.training.child import read_events, run_training

        item = self.runs.currentItem()
        run_dir = Path(item.data(Qt.UserRole)) if item is not None else self.run_dir
        if run_dir is None:
            self.status.setText("Choose a run in the list of past runs first.")
            return
        self._begin(run_dir, f"Resuming {run_dir.name}…")
        for event in read_events(run_dir):  # the curve so far
            if getattr(event, "name", None) in ("train_loss", "val_loss"):
                self.chart.add(event.name, event.step, event.value)
        self._run(lambda token: run_training(None, run_dir, token), on_done=self._trained)

    def _begin(self, run_dir: Path, message: str) -> None:
        self.run_dir = run_dir
        self.exported = None
        self.chart.clear()
        self.log.clear()
        self.progress.setRange(0, 0)
        self._progress_start = None
        self.tell(message)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.tell("Stopping and saving a checkpoint…")

    def _trained(self, event: Done) -> None:
        self.tell(event.message)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        evaluation = event.data.get("evaluation")
        if evaluation:
            for user_type, scores in evaluation.get("by_user_type", {}).items():
                self.log.appendPlainText(
                    f"{user_type}: BLEU {scores['bleu_base']:.1f} → {scores['bleu_tuned']:.1f}"
                    + (f", reading grade {scores['grade_base']:.1f} → {scores['grade_tuned']:.1f}"
                       if scores.get("grade_base") is not None and scores.get("grade_tuned") is not None else ""))

    def _progress(self, done: float, total: float, unit: str, message: str) -> None:
        if unit != "steps" or total <= 0:
            return
        now = time.monotonic()
        if self._progress_start is None:
            self._progress_start = (now, done)
            self.chart.total_steps = int(total)
        self.progress.setRange(0, int(total))
        self.progress.setValue(int(done))
        started, first = self._progress_start
        text = f"Step {done:g} of {total:g} ({message})"
        if done > first:
            eta = (now - started) / (done - first) * (total - done)
            text += f" · about {duration(eta)} left"
        self._step_text = text
        self._show_status()

    def _metric(self, name: str, value: float, step: int) -> None:
        if name in ("train_loss", "val_loss"):
            self.chart.add(name, step, value)
        elif name == "dpo_loss":  # a DPO run: its loss on the same chart
            self.chart.add("train_loss", step, value)
        if name == "tokens_per_s":
            self._speed = value
        elif name == "memory_gb":
            self._memory = value
        self._show_status()

    def _show_status(self) -> None:
        parts = [getattr(self, "_step_text", "")]
        if getattr(self, "_speed", None):
            parts.append(f"{self._speed:,.0f} tokens/s")
        if getattr(self, "_memory", None):
            parts.append(f"memory {self._memory:.1f} GB")
        points = self.chart.series["train_loss"]
        if points:
            parts.append(f"loss {points[-1][1]:.3f}")
        self.status.setText(" · ".join(p for p in parts if p))

    # -- past runs, export, chat -----------------------------------------------------------

    def refresh_runs(self) -> None:
        selected = self.run_dir
        self.runs.blockSignals(True)  # rebuilding the list is not the person choosing a run
        self.runs.clear()
        from muse_desktop.training.runfolder import list_runs

        for run in list_runs(runs_dir()):
            run_dir = run.path
            item = QListWidgetItem(f"{run.name}\n{run.describe()}")
            item.setData(Qt.UserRole, str(run_dir))
            self.runs.addItem(item)
            if selected is not None and run_dir == selected:
                self.runs.setCurrentItem(item)
        self.runs.blockSignals(False)

    def _run_selected(self, item, _previous=None) -> None:
        if item is None or self.worker is not None:
            return
        from muse_desktop.training.child import read_events

        self.run_dir = Path(item.data(Qt.UserRole))
        self.exported = None
        self.chart.clear()
        for event in read_events(self.run_dir):
            if getattr(event, "name", None) in ("train_loss", "val_loss"):
                self.chart.add(event.name, event.step, event.value)
        self.log.setPlainText(run_details(self.run_dir))
        self.status.setText(f"{self.run_dir.name}: {run_status(self.run_dir)}")
        self._update_buttons()

    def export(self, mode: str) -> None:
        from muse_desktop.training.export import export_run, register

        if self.run_dir is None:
            return
        run_dir = self.run_dir
        self.status.setText("Making a model for the chat: merging, converting, checking, quantizing…"
                            if mode == "merge" else "Making a small add-on (GGUF LoRA adapter)…")
        self.progress.setRange(0, 0)

        def done(event: Done) -> None:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.tell(event.message)
            register(self.store, event)  # here, on the thread that owns the database
            if event.data.get("kind") == "adapter":
                self.exported = (event.data["base_path"], event.path)
            else:
                self.exported = (event.path, "")

        self._run(lambda token: export_run(run_dir, mode, cancel=token), on_done=done)

    def chat(self) -> None:
        if self.exported:
            self.chat_requested.emit(*self.exported)

    def _update_buttons(self) -> None:
        busy = self.worker is not None
        from muse_desktop.training.runfolder import RunFolder

        run = RunFolder(self.run_dir) if self.run_dir is not None else None
        finished = run is not None and run.finished()
        resumable = run is not None and not busy and run.resumable
        for button in (self.start_button, self.check_button, self.hardware_button, self.dpo_button,
                       self.reproduce_button):
            button.setEnabled(self.available and not busy)
        self.get_data_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.resume_button.setEnabled(self.available and not busy and resumable)
        self.export_button.setEnabled(self.available and not busy and finished)
        self.export_adapter_button.setEnabled(self.available and not busy and finished)
        self.chat_button.setEnabled(not busy and self.exported is not None)

    def _run(self, make_events, on_done, on_failed=None) -> None:
        if self.worker is not None:
            return
        start_worker(self, make_events, self._finished, done=on_done, failed=on_failed or self._failed,
                     progress=self._progress, metric=self._metric,
                     log=lambda message, _level: self.log.appendPlainText(message))
        self._update_buttons()

    def tell(self, message: str, assertive: bool = False) -> None:
        """A status that matters (started, stopping, finished, failed): shown and told to screen readers once."""
        self.status.setText(message)
        widgets.announce(self.status, message, assertive)

    def _failed(self, message: str) -> None:
        self.tell(message, assertive=True)
        self.log.appendPlainText(message)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _finished(self) -> None:
        self.refresh_runs()
        self._update_buttons()
        then, self._then = self._then, None
        if then is not None:
            then()

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker.thread.wait(60000)
