"""Making training data without a cloud: examples from documents, and more examples like a few seeds.

Both need a *teacher* that writes: a model file on this computer, or an
OpenAI-compatible server (llama.cpp's server, LM Studio, Ollama…). Self-instruct
candidates are shown for review; only the ticked ones are saved.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
)

from muse_desktop.base.events import Done
from muse_desktop.ui import widgets
from muse_desktop.ui.workers import EventWorker, start_worker


def make_teacher(model_path: str, server: str):
    """(ask, close) for a GGUF file or a server URL; built on the worker thread."""
    from muse_desktop.data.docbuilder import DEFAULT_SERVER, engine_teacher, server_teacher

    if model_path:
        from muse_desktop.chat.engine import ChatEngine, EngineSettings

        engine = ChatEngine(model_path, EngineSettings(context_length=4096))
        return engine_teacher(engine), engine.close
    return server_teacher(server or DEFAULT_SERVER), lambda: None


class DataToolsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Make training examples")
        self.worker: EventWorker | None = None
        self.kept: list[dict] = []
        layout = QVBoxLayout(self)

        teacher = QGroupBox("Who writes the examples")
        form = QVBoxLayout(teacher)
        row = QHBoxLayout()
        self.model_path = QLineEdit()
        self.model_path.setAccessibleName("Teacher model file")
        self.model_path.setPlaceholderText("A model file (.gguf) on this computer…")
        row.addWidget(self.model_path, 1)
        row.addWidget(widgets.button("Choose…", "Choose the teacher model file", self._choose_model))
        form.addLayout(row)
        self.server = QLineEdit()
        self.server.setAccessibleName("Teacher server address")
        self.server.setPlaceholderText("…or an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
        form.addWidget(self.server)
        layout.addWidget(teacher)

        docs = QGroupBox("Examples from documents (the MUsE way)")
        form = QVBoxLayout(docs)
        row = QHBoxLayout()
        self.folder = QLineEdit()
        self.folder.setAccessibleName("Folder of documents")
        self.folder.setPlaceholderText("A folder of .txt, .md and .html documents")
        row.addWidget(self.folder, 1)
        row.addWidget(widgets.button("Choose…", "Choose the documents folder", self._choose_folder))
        form.addLayout(row)
        row = QHBoxLayout()
        self.user_types = QLineEdit("Child, Elderly")
        self.user_types.setAccessibleName("User types, separated by commas")
        self.output = QLineEdit()
        self.output.setAccessibleName("File the examples go to")
        self.output.setPlaceholderText("Output file (.jsonl); running again continues it")
        row.addWidget(self.user_types, 1)
        row.addWidget(self.output, 1)
        form.addLayout(row)
        self.build_button = widgets.button("Write the examples", "Write question and answer pairs from the documents",
                                           self.build, primary=True)
        form.addWidget(self.build_button, 0, Qt.AlignLeft)
        layout.addWidget(docs)

        more = QGroupBox("More examples like a few of yours (self-instruct)")
        form = QVBoxLayout(more)
        row = QHBoxLayout()
        self.seeds = QLineEdit()
        self.seeds.setAccessibleName("Seed examples file")
        self.seeds.setPlaceholderText("A file with a handful of your examples")
        row.addWidget(self.seeds, 1)
        self.count = QSpinBox()
        self.count.setRange(1, 1000)
        self.count.setValue(10)
        self.count.setAccessibleName("How many to ask for")
        row.addWidget(self.count)
        self.more_button = widgets.button("Write more like these", "Ask the teacher for new examples", self.augment)
        row.addWidget(self.more_button)
        form.addLayout(row)
        self.candidates = QListWidget()
        self.candidates.setAccessibleName("New examples to review: ticked ones are kept")
        self.candidates.setWordWrap(True)
        form.addWidget(self.candidates)
        self.save_button = widgets.button("Save the ticked ones…", "Save the ticked examples to a file",
                                          self.save_kept)
        self.save_button.setEnabled(False)
        form.addWidget(self.save_button, 0, Qt.AlignLeft)
        layout.addWidget(more)

        self.progress = QProgressBar()
        self.progress.setAccessibleName("Progress")
        self.progress.setTextVisible(False)
        self.progress.hide()
        layout.addWidget(self.progress)
        row = QHBoxLayout()
        self.status = widgets.label(style="muted", name="Status")
        row.addWidget(self.status, 1)
        self.cancel_button = widgets.button("Cancel", "Stop writing examples", self.cancel)
        self.cancel_button.setEnabled(False)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)

    def _choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Teacher model", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self.model_path.setText(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Documents folder", str(Path.home()))
        if path:
            self.folder.setText(path)

    def build(self) -> None:
        from muse_desktop.data.docbuilder import build_dataset

        model, server = self.model_path.text().strip(), self.server.text().strip()
        folder, output = self.folder.text().strip(), self.output.text().strip()
        types = self.user_types.text().split(",")
        if not folder or not output:
            self.status.setText("Choose the documents folder and the output file first.")
            return

        def events(token):
            ask, close = make_teacher(model, server)
            try:
                yield from build_dataset(folder, types, output, ask, cancel=token)
            finally:
                close()

        self._run(events, lambda event: self.status.setText(event.message))

    def augment(self) -> None:
        from muse_desktop.data.augment import self_instruct
        from muse_desktop.data.datasets import load_dataset

        model, server, seeds_path, count = (self.model_path.text().strip(), self.server.text().strip(),
                                            self.seeds.text().strip(), self.count.value())

        def events(token):
            report = load_dataset(seeds_path)
            seeds = [{"user_type": e.user_type or "Adult", "question": e.turns[0].content,
                      "answer": e.turns[-1].content} for e in report.examples if e.turns]
            ask, close = make_teacher(model, server)
            try:
                yield from self_instruct(seeds, ask, count, cancel=token)
            finally:
                close()

        def done(event: Done) -> None:
            self.status.setText(event.message)
            self.candidates.clear()
            for pair in event.data["kept"]:
                item = QListWidgetItem(f"[{pair['user_type']}] {pair['question']}\n{pair['answer']}")
                item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
                item.setCheckState(Qt.Checked)
                item.setData(Qt.UserRole, pair)
                self.candidates.addItem(item)
            self.save_button.setEnabled(self.candidates.count() > 0)

        self._run(events, done)

    def ticked(self) -> list[dict]:
        return [self.candidates.item(i).data(Qt.UserRole) for i in range(self.candidates.count())
                if self.candidates.item(i).checkState() == Qt.Checked]

    def save_kept(self, path: str | None = None) -> None:
        if not path:
            path, _ = QFileDialog.getSaveFileName(self, "Add the examples to", str(Path.home() / "more.jsonl"),
                                                  "JSON lines (*.jsonl)")
        if not path:
            return
        kept = self.ticked()
        with open(path, "a", encoding="utf-8") as out:
            for pair in kept:
                out.write(json.dumps(pair, ensure_ascii=False) + "\n")
        self.status.setText(f"{len(kept)} examples added to {path}.")

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _run(self, make_events, on_done) -> None:
        if self.worker is not None:
            return
        for button in (self.build_button, self.more_button):
            button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.progress.show()
        self.status.setText("Writing…")
        start_worker(self, make_events, self._finished, done=on_done, failed=self.status.setText,
                     progress=self._progress, log=lambda message, _level: self.status.setText(message))

    def _progress(self, done: float, total: float, unit: str, message: str) -> None:
        self.progress.setRange(0, int(total))
        self.progress.setValue(int(done))
        self.status.setText(f"{done:g} of {total:g} {unit}: {message}")

    def _finished(self) -> None:
        for button in (self.build_button, self.more_button):
            button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.hide()

    def closeEvent(self, event) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker.thread.wait(30000)
        super().closeEvent(event)
