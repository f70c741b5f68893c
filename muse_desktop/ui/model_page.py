"""Second step of the first run: which model answers. Get MUsE, open a file, or try the demo offline.

Get MUsE first asks the internet what is needed (nothing is downloaded yet), then
offers the two ways with their sizes; the download starts only when one is chosen.
"""

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

from muse_desktop.base.events import Done
from muse_desktop.household.settings import Settings
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
        self._chosen: tuple[str, str] | None = None  # model, add-on ("" for none)
        self._planned = None
        layout = QVBoxLayout(self)
        layout.setSpacing(12)
        layout.addWidget(widgets.label("Which model should answer?", "heading"))
        layout.addWidget(widgets.label(
            "The model is the part that writes the answers. It runs on this computer; "
            "after it is set up, no internet is needed."))

        from muse_desktop.models.getmuse import BASE_ONLY_NOTICE, adapter_repo_from

        get_text = ("Downloads the model and MUsE once (about 8 GB), then makes them small enough for a laptop. "
                    "You choose how next, and see the sizes before anything is downloaded. This can take an hour "
                    "on a slow connection; if it is interrupted, pressing the button again continues where it "
                    "stopped.")
        if not adapter_repo_from(settings.muse_adapter_repo):
            get_text += " " + BASE_ONLY_NOTICE
        self.get_button = self._choice(layout, "Get MUsE (download)", "Download and set up the MUsE model",
                                       get_text, self.get_muse, primary=True)
        self.plan = None
        self.ways = QFrame()
        self.ways.setObjectName("choice")
        ways = QVBoxLayout(self.ways)
        ways.addWidget(widgets.label("How should MUsE be set up?", "heading"))
        self.merged_button, self.merged_text = self._way(
            ways, "Build MUsE into the model", "Set up MUsE built into the model", "merged")
        self.addon_button, self.addon_text = self._way(
            ways, "As a small add-on", "Set up MUsE as a small add-on", "add-on")
        layout.addWidget(self.ways)
        self.ways.hide()
        self.open_button = self._choice(layout, "Open a model file…", "Open a model file that is already on this computer",
                                        "If a model was already put on this computer as a file.", self.choose_file)
        self.demo_button = self._choice(layout, "Try it offline", "Try the practice model",
                                        "Ready in seconds, no download. This practice model has not learnt "
                                        "anything, so its answers are nonsense. It only shows how the app works.",
                                        self.use_demo)

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

    def _way(self, layout, text, name, way):
        button = widgets.button(text, name, lambda: self.start_muse(way), primary=way == "merged")
        button.setMinimumHeight(64)
        explanation = widgets.label("", "muted")
        explanation.setBuddy(button)
        layout.addWidget(button)
        layout.addWidget(explanation)
        return button, explanation

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
            if entry.source == "get-muse":  # its name already says what it is, in plain words
                text = f"{entry.name}, {entry.created_at[:10]}"
            else:
                what = "add-on for " + Path(entry.base_path).name if entry.kind == "adapter" else "model"
                text = f"{entry.name} — {what}, {entry.created_at[:10]}"
            item = QListWidgetItem(text)
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
        from muse_desktop.models.demo_model import ensure_demo_gguf

        self._run(lambda token: ensure_demo_gguf(cancel=token), "Preparing the demo model…")

    def get_muse(self) -> None:
        """Ask what is needed and show the two ways with their sizes; nothing is downloaded yet."""
        from muse_desktop.models.getmuse import plan_muse

        adapter, endpoint = self.settings.muse_adapter_repo, self.settings.hub_endpoint or None
        revision = self.settings.base_revision

        def events(_token):
            yield Done("", data={"plan": plan_muse(None, adapter, endpoint, base_revision=revision)})

        self.ways.hide()
        self._run(events, "Asking the internet what is needed (nothing is downloaded yet)…")

    def _show_ways(self, plan) -> None:
        from muse_desktop.models.getmuse import Way

        self.plan = plan
        if plan.adapter is None:  # the base alone: there is nothing to choose
            self.start_muse(Way.MERGED)
            return
        texts = {
            Way.MERGED: "One model file with MUsE inside. Fastest to answer.",
            Way.ADDON: ("The plain model plus MUsE as a small extra part. You can turn MUsE down or off "
                        "in the chat, and other add-ons can share the same model."),
        }
        for way, text in ((Way.MERGED, self.merged_text), (Way.ADDON, self.addon_text)):
            download, disk, result = plan.gb(way)
            text.setText(f"{texts[way]} Downloads {download:.1f} GB. Needs {disk:.1f} GB of free space while it "
                         f"is prepared, and keeps {result:.1f} GB.")
        for button, text in ((self.merged_button, self.merged_text), (self.addon_button, self.addon_text)):
            button.setAccessibleDescription(text.text())
        self.status.setText("Choose how MUsE should be set up.")
        self.ways.show()
        self.merged_button.setFocus()

    def start_muse(self, way: str) -> None:
        from muse_desktop.models.getmuse import get_muse

        plan, self.plan = self.plan, None
        self.ways.hide()
        adapter, endpoint = self.settings.muse_adapter_repo, self.settings.hub_endpoint or None
        revision = self.settings.base_revision
        self._run(lambda token: get_muse(adapter_repo=adapter, endpoint=endpoint, cancel=token, way=way,
                                         base_revision=revision, plan=plan),
                  "Getting MUsE ready…", show_progress=True)

    # -- running ---------------------------------------------------------------------------

    def _run(self, make_events, message: str, show_progress: bool = False) -> None:
        if self.busy:
            return
        self.status.setText(message)
        self.progress.setVisible(show_progress)
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.cancel_button.setVisible(True)
        for button in (self.get_button, self.open_button, self.demo_button, self.back_button,
                       self.merged_button, self.addon_button):
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
        if "plan" in (event.data or {}):
            self._planned = event.data["plan"]
            return
        self.status.setText(event.message)
        if self.store is not None and "provenance" in (event.data or {}):
            from muse_desktop.models.getmuse import add_to_library

            add_to_library(self.store, event)
        if event.path:
            self._chosen = (event.path, (event.data or {}).get("adapter_path", ""))

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
        for button in (self.get_button, self.open_button, self.demo_button, self.back_button,
                       self.merged_button, self.addon_button):
            button.setEnabled(True)
        planned, self._planned = self._planned, None
        if planned is not None:
            self._show_ways(planned)
            return
        chosen, self._chosen = self._chosen, None
        if chosen and chosen[1]:
            self.library_chosen.emit(*chosen)
        elif chosen:
            self.model_chosen.emit(chosen[0])

    def shutdown(self) -> None:
        if self.worker is not None:
            # Every step here honours the cancel (the quantizer is a child process, killed at
            # once); a window destroyed while its thread still runs would crash the app.
            self.worker.cancel()
            self.worker.thread.wait()
