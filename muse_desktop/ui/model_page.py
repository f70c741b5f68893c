"""Second step of the first run: which model answers. Get MUsE, open a file, or try the demo offline."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.events import Done
from muse_desktop.settings import Settings
from muse_desktop.ui import widgets
from muse_desktop.ui.workers import EventWorker, start_worker


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


class ModelPage(QWidget):
    """Three plain choices, each a big button with one sentence saying what it does."""

    model_chosen = Signal(str)  # the GGUF path to open
    library_chosen = Signal(str, str)  # a library entry: model path, adapter path ("" for none)
    back_requested = Signal()
    problem = Signal(str)

    def __init__(self, settings: Settings, store=None):
        super().__init__()
        self.settings = settings
        self.store = store
        self.worker: EventWorker | None = None
        self._chosen: str | None = None
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(widgets.label("Which model should answer?", "heading"))
        layout.addWidget(widgets.label(
            "The model is the part that writes the answers. It runs on this computer; "
            "after it is set up, no internet is needed."))

        from muse_desktop.getmuse import adapter_repo_from, NO_ADAPTER_NOTICE

        get_text = ("Downloads the model once (about 7.6 GB; about 12 GB of free disk space is needed while it is "
                    "prepared), then makes it small enough for a laptop. This can take an hour on a slow connection; "
                    "if it is interrupted, pressing the button again continues where it stopped.")
        if not adapter_repo_from(settings.muse_adapter_repo):
            get_text += " " + NO_ADAPTER_NOTICE
        self.get_button = self._choice(layout, "Get MUsE (download)", "Download and set up the MUsE model",
                                       get_text, self.get_muse, primary=True)
        self.open_button = self._choice(layout, "Open a model file…", "Open a GGUF model file",
                                        "If you already have a model file (.gguf) on this computer.", self.choose_file)
        self.demo_button = self._choice(layout, "Try it offline", "Try the demo model, which has random weights",
                                        "Ready in seconds, no download. It has random weights: its answers are "
                                        "nonsense. It only shows how the app works.", self.use_demo)

        # Models made by the Trainer (or registered otherwise): one click to use again.
        self.library_label = widgets.label("Models made on this computer:")
        layout.addWidget(self.library_label)
        self.library = QListWidget()
        self.library.setAccessibleName("Models made on this computer")
        self.library.setWordWrap(True)
        self.library.setMaximumHeight(160)
        self.library.itemActivated.connect(self._library_item)
        self.library.itemClicked.connect(self._library_item)
        layout.addWidget(self.library)
        self.refresh_library()

        self.progress = QProgressBar()
        self.progress.setAccessibleName("Progress")
        self.progress.setTextVisible(False)  # the amount is said in words below, in full contrast
        self.progress.setMinimumHeight(32)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.status = widgets.label(style="muted", name="Status")
        layout.addWidget(self.status)
        row = QHBoxLayout()
        self.cancel_button = widgets.button("Cancel", "Cancel setting up the model", self.cancel)
        self.cancel_button.hide()
        self.back_button = widgets.button("Back", "Back to choosing who is using MUsE", self.back_requested)
        row.addWidget(self.back_button)
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addStretch(1)

    def _choice(self, layout, text, name, description, on_click, primary=False):
        frame = QFrame()
        frame.setObjectName("choice")
        inner = QVBoxLayout(frame)
        button = widgets.button(text, name, on_click, primary=primary)
        button.setMinimumHeight(64)
        button.setAccessibleDescription(description)
        inner.addWidget(button)
        explanation = widgets.label(description, "muted")
        explanation.setBuddy(button)
        inner.addWidget(explanation)
        layout.addWidget(frame)
        return button

    def refresh_library(self) -> None:
        self.library.clear()
        entries = [e for e in (self.store.library() if self.store is not None else []) if Path(e.path).is_file()]
        for entry in entries:
            what = "add-on for " + Path(entry.base_path).name if entry.kind == "adapter" else "model"
            item = QListWidgetItem(f"{entry.name} — {what}, {entry.created_at[:10]}")
            item.setData(Qt.UserRole, (entry.base_path, entry.path) if entry.kind == "adapter" else (entry.path, ""))
            self.library.addItem(item)
        self.library.setVisible(bool(entries))
        self.library_label.setVisible(bool(entries))

    def _library_item(self, item: QListWidgetItem) -> None:
        if not self.busy:
            self.library_chosen.emit(*item.data(Qt.UserRole))

    # -- the three ways ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def choose_file(self) -> None:
        if self.busy:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open a model file", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.model_chosen.emit(path)

    def use_demo(self) -> None:
        from muse_desktop.demo_model import ensure_demo_gguf

        self._run(lambda token: ensure_demo_gguf(cancel=token), "Preparing the demo model…")

    def get_muse(self) -> None:
        from muse_desktop.getmuse import get_muse

        adapter, endpoint = self.settings.muse_adapter_repo, self.settings.hub_endpoint or None
        self._run(lambda token: get_muse(adapter_repo=adapter, endpoint=endpoint, cancel=token),
                  "Getting MUsE ready…", show_progress=True)

    # -- running ---------------------------------------------------------------------------

    def _run(self, make_events, message: str, show_progress: bool = False) -> None:
        if self.busy:
            return
        self.status.setText(message)
        self.progress.setVisible(show_progress)
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.cancel_button.setVisible(True)
        for button in (self.get_button, self.open_button, self.demo_button, self.back_button):
            button.setEnabled(False)
        self.cancel_button.setFocus()
        start_worker(self, make_events, self._finished, done=self._done, failed=self._failed,
                     progress=self._progress, log=lambda text, _level: self.status.setText(text))

    def _progress(self, done: float, total: float, unit: str, message: str) -> None:
        self.progress.show()
        if total <= 0:
            self.progress.setRange(0, 0)
            return
        fraction = min(done / total, 1.0)
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * fraction))
        amount = f"{_size(done)} of {_size(total)}" if unit == "bytes" else f"{done:g} of {total:g} {unit}"
        self.status.setText(f"{message} — {amount} ({fraction:.0%})")

    def _done(self, event: Done) -> None:
        self.status.setText(event.message)
        if event.path:
            self._chosen = event.path

    def _failed(self, message: str) -> None:
        if message == "Stopped.":
            self.status.setText("Stopped. What was downloaded is kept: press the button again to continue.")
            return
        self.status.setText(message)
        self.problem.emit(message)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.status.setText("Stopping… What was downloaded is kept for next time.")

    def _finished(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        for button in (self.get_button, self.open_button, self.demo_button, self.back_button):
            button.setEnabled(True)
        chosen, self._chosen = self._chosen, None
        if chosen:
            self.model_chosen.emit(chosen)

    def shutdown(self) -> None:
        if self.worker is not None:
            # Every step here honours the cancel (the quantizer is a child process, killed at
            # once); a window destroyed while its thread still runs would crash the app.
            self.worker.cancel()
            self.worker.thread.wait()
