"""Preference mode's panel: candidate answers side by side; mark the best and the worst, say why."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.ui import widgets


class PreferencePanel(QWidget):
    chosen = Signal(int, int, str)  # best, worst, reason

    def __init__(self):
        super().__init__()
        self.setAccessibleName("Candidate answers")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.help = widgets.label("Four answers are being written. Mark the best and the worst; only the best "
                                  "stays in the conversation.", "muted")
        layout.addWidget(self.help)
        # The candidates scroll inside the panel, so long answers are never cut off.
        holder = QWidget()
        self.grid = QGridLayout(holder)
        self.grid.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(holder)
        scroll.setMinimumHeight(160)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setAccessibleName("Candidate answers")
        layout.addWidget(scroll, 1)
        self.best_group = QButtonGroup(self)
        self.worst_group = QButtonGroup(self)
        self.best_group.idToggled.connect(self._update)
        self.worst_group.idToggled.connect(self._update)
        self.texts: list = []
        self.boxes: list[QGroupBox] = []
        row = QHBoxLayout()
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Why is the best one better? (you may leave this empty)")
        self.reason.setAccessibleName("Why the best answer is better")
        row.addWidget(self.reason, 1)
        self.keep = widgets.button("Keep the best answer", "Keep the answer marked best", self._keep, primary=True)
        row.addWidget(self.keep)
        layout.addLayout(row)
        self.setVisible(False)

    def start(self, labels: list[str]) -> None:
        """Empty boxes for ``labels`` (one per candidate), shown while they are written."""
        for box in self.boxes:
            self.grid.removeWidget(box)
            box.deleteLater()
        for button in self.best_group.buttons() + self.worst_group.buttons():
            self.best_group.removeButton(button)
            self.worst_group.removeButton(button)
        self.boxes, self.texts = [], []
        for index, label in enumerate(labels):
            box = QGroupBox(f"Answer {index + 1}")
            box.setToolTip(label)
            inner = QVBoxLayout(box)
            text = widgets.label(name=f"Answer {index + 1}")
            # While the answers stream in, the name stays fixed: a label's name is its text, and a
            # screen reader would be told every word of four answers at once. ready() gives the words back.
            text.setAccessibleName(f"Answer {index + 1} is being written…")
            text.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
            inner.addWidget(text)
            buttons = QHBoxLayout()
            best = widgets.button("Best", f"Answer {index + 1} is the best")
            worst = widgets.button("Worst", f"Answer {index + 1} is the worst")
            for button, group in ((best, self.best_group), (worst, self.worst_group)):
                button.setCheckable(True)
                button.setEnabled(False)
                group.addButton(button, index)
                buttons.addWidget(button)
            inner.addLayout(buttons)
            self.grid.addWidget(box, index // 2, index % 2)
            self.boxes.append(box)
            self.texts.append(text)
        self.reason.clear()
        self.keep.setEnabled(False)
        self.help.setText(f"{len(labels)} answers are being written. Mark the best and the worst; only the "
                          "best stays in the conversation.")
        self.setVisible(True)

    def append(self, index: int, delta: str) -> None:
        self.texts[index].setText(self.texts[index].text() + delta)

    def ready(self) -> None:
        for text in self.texts:  # each answer is read by its words again, with one change
            text.setAccessibleName("")
        for button in self.best_group.buttons() + self.worst_group.buttons():
            button.setEnabled(True)
        self.help.setText("Mark the best answer and the worst one, then press “Keep the best answer”.")

    def choose(self, best: int, worst: int, reason: str = "") -> None:
        """What a person does with the mouse or keyboard, for tests and scripts."""
        self.best_group.button(best).setChecked(True)
        self.worst_group.button(worst).setChecked(True)
        self.reason.setText(reason)

    def _update(self, *_args) -> None:
        best, worst = self.best_group.checkedId(), self.worst_group.checkedId()
        self.keep.setEnabled(best >= 0 and worst >= 0 and best != worst)

    def _keep(self) -> None:
        best, worst = self.best_group.checkedId(), self.worst_group.checkedId()
        if best >= 0 and worst >= 0 and best != worst:
            self.setVisible(False)
            self.chosen.emit(best, worst, self.reason.text().strip())
