"""The Compare tab: blind ratings of 2–5 models, then bar charts of mean ± standard deviation."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.evaluation.compare import MEASURES, CompareError, Contender, Summary
from muse_desktop.ui import widgets
from muse_desktop.ui.widgets import FlowLayout
from muse_desktop.ui.workers import EventWorker, start_worker

SAMPLE_QUESTIONS = "Why is a balanced diet important?\nHow does the heart work?\nWhat is a computer virus?"
# Bars differ by fill pattern as well as colour (nothing carried by colour alone).
PATTERNS = (Qt.SolidPattern, Qt.BDiagPattern, Qt.CrossPattern, Qt.Dense5Pattern, Qt.FDiagPattern)
COLOURS = ("#0B5CAD", "#B34700", "#2E7D32", "#6A1B9A", "#4A4A4A")
# The words for the three measures, the same in the rating, the results and the README
# (the study's names, understandability, geniality and applicability, stay in the CSV file).
SHORT = {"understandability": "Clear", "geniality": "Kind", "applicability": "Useful"}
MEANING = {"understandability": "easy to understand", "geniality": "friendly and warm",
           "applicability": "helps with the question"}
MEASURE_LEGEND = ("Clear: easy to understand. Kind: friendly and warm. Useful: helps with the question. "
                  "1 = poor, 5 = excellent.")
OPEN_IN_CHAT = "Open in the chat: "


class ScoreButtons(QWidget):
    """One measure of one answer: its word, then five big buttons 1–5 (one is chosen), in place of a spin box."""

    def __init__(self, measure: str, answer_number: int, value: int = 3):
        super().__init__()
        self.measure = measure
        word = SHORT[measure]
        self.setAccessibleName(f"{word}, answer {answer_number}")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(4)
        self.word = widgets.label(word)
        self.word.setWordWrap(False)
        row.addWidget(self.word)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        for score in range(1, 6):
            button = widgets.button(str(score), f"{word} of answer {answer_number}: {score} of 5")
            button.setObjectName("score")
            button.setCheckable(True)
            self.group.addButton(button, score)
            row.addWidget(button)
        self.setValue(value)

    def value(self) -> int:
        return self.group.checkedId()

    def setValue(self, value: int) -> None:  # noqa: N802 (as a spin box says it)
        self.group.button(value).setChecked(True)

    def buttons(self) -> list:
        return [self.group.button(score) for score in range(1, 6)]


class BarChart(QWidget):
    """Mean ± standard deviation per model (bars), measure (groups) and user type (panels)."""

    def __init__(self):
        super().__init__()
        self.summary: Summary | None = None
        self.setMinimumHeight(300)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        self.setAccessibleName("Comparison results chart")

    def show_summary(self, summary: Summary) -> None:
        self.summary = summary
        parts = []
        for (model, measure, user_type), (mean, sd, n) in sorted(summary.stats.items()):
            parts.append(f"{model}, {SHORT.get(measure, measure)}, {user_type}: {mean:.1f} ± {sd:.1f} (n={n})")
        self.setAccessibleDescription("; ".join(parts) or "No ratings yet.")
        self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        text = self.palette().windowText().color()
        metrics = painter.fontMetrics()
        summary = self.summary
        if summary is None or not summary.stats:
            painter.setPen(text)
            painter.drawText(self.rect(), Qt.AlignCenter, "The results appear here after rating.")
            return
        legend_h = metrics.height() + 12
        x = 8.0
        for i, model in enumerate(summary.models):
            painter.setPen(QPen(text, 1))
            painter.setBrush(QBrush(QColor(COLOURS[i % 5]), PATTERNS[i % 5]))
            painter.drawRect(QRectF(x, 4, 22, metrics.height()))
            painter.drawText(QPointF(x + 28, 4 + metrics.ascent()), model)
            x += 44 + metrics.horizontalAdvance(model)
        panels = len(summary.user_types)
        left = metrics.horizontalAdvance("5") + 12
        width = (self.width() - left - 8) / max(panels, 1)
        top, bottom = legend_h + metrics.height() + 8, self.height() - 2 * metrics.height() - 10
        for p, user_type in enumerate(summary.user_types):
            x0 = left + p * width
            painter.setPen(text)
            painter.drawText(QRectF(x0, legend_h, width, metrics.height()), Qt.AlignCenter, f"For: {user_type}")
            painter.drawLine(QPointF(x0, bottom), QPointF(x0 + width - 10, bottom))
            if p == 0:
                for score in range(0, 6):
                    y = bottom - (bottom - top) * score / 5
                    painter.drawText(QRectF(0, y - metrics.height() / 2, left - 6, metrics.height()),
                                     Qt.AlignRight | Qt.AlignVCenter, str(score))
                    painter.setPen(QPen(text, 0.5, Qt.DotLine))
                    painter.drawLine(QPointF(left, y), QPointF(self.width() - 8, y))
                    painter.setPen(text)
            group_w = (width - 10) / len(MEASURES)
            bar_w = max(4.0, (group_w - 12) / max(len(summary.models), 1))
            for g, measure in enumerate(MEASURES):
                gx = x0 + g * group_w + 6
                label = metrics.elidedText(SHORT[measure], Qt.ElideRight, int(group_w - 6))
                painter.drawText(QRectF(gx, bottom + 4, group_w - 6, metrics.height()), Qt.AlignCenter, label)
                for m, model in enumerate(summary.models):
                    stat = summary.stats.get((model, measure, user_type))
                    if stat is None:
                        continue
                    mean, sd, _n = stat
                    bx = gx + m * bar_w
                    y = bottom - (bottom - top) * mean / 5
                    painter.setPen(QPen(text, 1))
                    painter.setBrush(QBrush(QColor(COLOURS[m % 5]), PATTERNS[m % 5]))
                    painter.drawRect(QRectF(bx, y, bar_w - 3, bottom - y))
                    # The error bar: mean ± one standard deviation, clipped to the 0–5 scale.
                    hi = bottom - (bottom - top) * min(mean + sd, 5) / 5
                    lo = bottom - (bottom - top) * max(mean - sd, 0) / 5
                    cx = bx + (bar_w - 3) / 2
                    painter.setPen(QPen(text, 2))
                    painter.drawLine(QPointF(cx, hi), QPointF(cx, lo))
                    painter.drawLine(QPointF(cx - 4, hi), QPointF(cx + 4, hi))
                    painter.drawLine(QPointF(cx - 4, lo), QPointF(cx + 4, lo))


class ComparePage(QWidget):
    def __init__(self, settings, store):
        super().__init__()
        self.settings, self.store = settings, store
        self.worker: EventWorker | None = None
        self.session: int | None = None
        self.round_index = 0
        layout = QVBoxLayout(self)
        layout.addWidget(widgets.label("Which model answers best? Rate without knowing which is which", "heading"))

        setup = QGroupBox("1. What to compare")
        form = QVBoxLayout(setup)
        self.models = QListWidget()
        form.addWidget(widgets.field_label("Models to compare (tick 2 to 5)", self.models))
        self.models.setMaximumHeight(150)
        # The whole row is the target, not only the small box: a click anywhere on it ticks or unticks.
        self.models.itemPressed.connect(lambda item: setattr(self, "_pressed_state", item.checkState()))
        self.models.itemClicked.connect(self._row_clicked)
        # The chat keeps the model it has open (and its add-on) in the settings.
        self.open_model = lambda: (self.settings.model_path, self.settings.adapter_path)
        form.addWidget(self.models)
        row = FlowLayout()
        row.addWidget(widgets.button("Add a model file…", "Add a GGUF model file to compare", self.add_file))
        self.mine_vs_muse_button = widgets.button(
            "My training against MUsE", "Tick your latest trained model and the published MUsE",
            self.mine_against_muse)
        row.addWidget(self.mine_vs_muse_button)
        form.addLayout(row)
        self.questions = QPlainTextEdit(SAMPLE_QUESTIONS)
        form.addWidget(widgets.field_label("Questions, one per line", self.questions))
        self.questions.setMaximumHeight(110)
        form.addWidget(self.questions)
        self.user_types = QLineEdit("Child, Elderly")
        form.addWidget(widgets.field_label("User types, separated by commas", self.user_types))
        form.addWidget(self.user_types)
        self.rater = QLineEdit()
        self.rater.setPlaceholderText("Your name")
        form.addWidget(widgets.field_label("Who is rating", self.rater))
        form.addWidget(self.rater)
        self.prepare_button = widgets.button("Prepare the answers", "Let every model answer every question",
                                             self.prepare, primary=True)
        form.addWidget(self.prepare_button, 0, Qt.AlignLeft)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Preparing answers")
        self.progress.setTextVisible(False)
        self.progress.hide()
        form.addWidget(self.progress)
        self.status = widgets.label(style="muted", name="Compare status")
        form.addWidget(self.status)
        layout.addWidget(setup)

        self.rating = QGroupBox("2. Rate the answers")
        rating = QVBoxLayout(self.rating)
        self.rating_legend = widgets.label(MEASURE_LEGEND, "muted")
        rating.addWidget(self.rating_legend)
        self.round_label = widgets.label(name="Question being rated")
        rating.addWidget(self.round_label)
        self.answers_box = QVBoxLayout()
        rating.addLayout(self.answers_box)
        self.next_button = widgets.button("Save and go on", "Save these ratings and show the next question",
                                          self.save_round, primary=True)
        rating.addWidget(self.next_button, 0, Qt.AlignLeft)
        self.rating.hide()
        layout.addWidget(self.rating)

        results = QGroupBox("3. Results: the average score, and how far the scores spread")
        box = QVBoxLayout(results)
        self.chart = BarChart()
        box.addWidget(self.chart)
        self.results_legend = widgets.label(
            MEASURE_LEGEND + " Each bar is the average score; the line through it shows how far the scores "
            "spread (one standard deviation either side).", "muted")
        box.addWidget(self.results_legend)
        self.best_label = widgets.label(name="How often each model was picked as best")
        box.addWidget(self.best_label)
        self.csv_button = widgets.button("Save as CSV…", "Save all ratings as a CSV file", self.save_csv)
        box.addWidget(self.csv_button, 0, Qt.AlignLeft)
        layout.addWidget(results)
        self.refresh_models()
        self.show_results()

    def refresh_models(self) -> None:
        """The library and the chat's open model; what was ticked (or added as a file) stays."""
        ticked, added = set(), []
        for i in range(self.models.count()):
            contender = self.models.item(i).data(Qt.UserRole)
            if self.models.item(i).checkState() == Qt.Checked:
                ticked.add((contender.path, contender.adapter))
            if self.models.item(i).data(Qt.UserRole + 1):
                added.append((contender.name, contender.path, contender.adapter))
        self.models.clear()
        self._sources: dict[str, str] = {}  # contender name -> where it came from (trainer, get-muse)
        library = [e for e in self.store.library() if Path(e.path).is_file()]
        for e in library:
            published = e.source == "get-muse" and (e.info or {}).get("adapter_repo")
            self._sources.setdefault(e.name, "muse" if published else e.source)
        entries = [(e.name, e.base_path or e.path, e.path if e.kind == "adapter" else "") for e in library]
        # The model open in the chat comes first (it may be in the library too: then once, by its open name).
        path, adapter = self.open_model()
        adapter = adapter if adapter and Path(adapter).is_file() else ""
        if path and Path(path).is_file():
            entries = [e for e in entries if (e[1], e[2]) != (path, adapter)]
            entries.insert(0, (OPEN_IN_CHAT + Path(adapter or path).stem, path, adapter))
        listed = {(p, a) for _, p, a in entries}
        for name, path, adapter in entries:
            self._add(name, path, adapter, checked=(path, adapter) in ticked)
        for name, path, adapter in added:
            if (path, adapter) not in listed:
                self._add(name, path, adapter, checked=(path, adapter) in ticked, from_file=True)

    def _row_clicked(self, item: QListWidgetItem) -> None:
        if item.checkState() == getattr(self, "_pressed_state", None):  # not a click on the box itself
            item.setCheckState(Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked)
        self._pressed_state = None

    def _add(self, name: str, path: str, adapter: str = "", checked: bool = False, from_file: bool = False) -> None:
        item = QListWidgetItem(name)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
        item.setData(Qt.UserRole, Contender(name, path, adapter))
        item.setData(Qt.UserRole + 1, from_file)
        self.models.addItem(item)

    def mine_against_muse(self) -> None:
        """Tick the newest model made by the Trainer and the published MUsE, nothing else.

        The rating stays blind: the answers are shown shuffled, without names, as always.
        """
        items = [self.models.item(i) for i in range(self.models.count())]
        mine = next((i for i in items if self._sources.get(i.text()) == "trainer"), None)  # the library is newest first
        muse = next((i for i in items if self._sources.get(i.text()) == "muse"), None)
        if mine is None or muse is None:
            missing = [what for what, found in (("a model you trained (Trainer → Make a chat model)", mine),
                                                ("the published MUsE (Chat → Change model → Get MUsE)", muse))
                       if found is None]
            self.status.setText("First make " + " and ".join(missing) + ".")
            return
        for item in items:
            item.setCheckState(Qt.Checked if item in (mine, muse) else Qt.Unchecked)
        self.status.setText(f"Ready to compare “{mine.text()}” with “{muse.text()}”; you will not see which is which.")

    def add_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Add a model", str(Path.home()), "GGUF models (*.gguf)")
        if path:
            self._add(Path(path).name, path, checked=True, from_file=True)

    def chosen(self) -> list[Contender]:
        return [self.models.item(i).data(Qt.UserRole) for i in range(self.models.count())
                if self.models.item(i).checkState() == Qt.Checked]

    def prepare(self) -> None:
        from muse_desktop.chat.engine import EngineSettings
        from muse_desktop.evaluation.compare import generate_answers, new_session

        from muse_desktop.household.scope import check_question

        # The same scope check as the chat: in kiosk mode no route reaches a model off-topic.
        for question in filter(str.strip, self.questions.toPlainText().splitlines()):
            verdict = check_question(question, self.settings.kiosk_mode)
            if not verdict.allowed:
                self.status.setText(verdict.problem or f"Kiosk mode is on, and “{question.strip()}” is outside "
                                                       "what this kiosk is for. Nothing was asked.")
                return
        try:
            self.session = new_session(self.store, self.rater.text(), self.chosen())
        except CompareError as exc:
            self.status.setText(str(exc))
            return
        questions = self.questions.toPlainText().splitlines()
        user_types = self.user_types.text().split(",")
        path, session = self.store.path, self.session
        settings = EngineSettings(threads=self.settings.threads, context_length=self.settings.context_length,
                                  long_context=self.settings.long_context)
        self.prepare_button.setEnabled(False)
        self.progress.show()
        self.status.setText("Every model is answering every question…")
        start_worker(self, lambda token: generate_answers(path, session, questions, user_types, settings,
                                                          cancel=token),
                     self._finished, done=lambda _event: self.start_rating(), failed=self._say,
                     progress=self._progress)

    def _progress(self, done: float, total: float, _unit: str, message: str) -> None:
        self.progress.setRange(0, int(total))
        self.progress.setValue(int(done))
        self.status.setText(f"{done:g} of {total:g} answers written ({message})")

    def _finished(self) -> None:
        self.prepare_button.setEnabled(True)
        self.progress.hide()

    def start_rating(self) -> None:
        from muse_desktop.evaluation.compare import rounds

        self.rounds = rounds(self.store, self.session)
        self.round_index = 0
        self._say("The answers are ready. They are shown in a new random order for each question, "
                  "without the models' names.")
        self.rating.show()
        self.show_round()
        self._focus_first_score()

    def show_round(self) -> None:
        while self.answers_box.count():
            item = self.answers_box.takeAt(0)
            if item.widget():
                item.widget().hide()
                item.widget().deleteLater()
        current = self.rounds[self.round_index]
        first = current[0]
        self.round_label.setText(f"Question {self.round_index + 1} of {len(self.rounds)}, for {first['user_type']}: "
                                 f"“{first['question']}”")
        self.best_group = QButtonGroup(self)
        self.score_boxes: list[tuple[int, list[ScoreButtons]]] = []
        for position, answer in enumerate(current):
            box = QGroupBox(f"Answer {position + 1}")
            inner = QVBoxLayout(box)
            text = widgets.label(answer["answer"] or "(no answer)", name=f"Answer {position + 1}")
            text.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
            inner.addWidget(text)
            # One measure a line: the same at every text size, nothing to wrap or overlap.
            scores = []
            words = max(self.fontMetrics().horizontalAdvance(word) for word in SHORT.values())
            for measure in MEASURES:
                score = ScoreButtons(measure, position + 1)
                score.word.setMinimumWidth(words + 12)  # the five buttons line up under each other
                inner.addWidget(score, 0, Qt.AlignLeft)
                scores.append(score)
            best = widgets.button("Best", f"Answer {position + 1} is the best")
            best.setCheckable(True)
            self.best_group.addButton(best, position)
            inner.addWidget(best, 0, Qt.AlignLeft)
            self.answers_box.addWidget(box)
            self.score_boxes.append((answer["id"], scores))

    def rate_current(self, scores: list[tuple[int, int, int]], best: int | None = None) -> None:
        """Set the scores on screen (for tests and scripts) — the same as pressing the 1–5 buttons."""
        for (_, buttons), values in zip(self.score_boxes, scores, strict=True):
            for measure, value in zip(buttons, values, strict=True):
                measure.setValue(value)
        if best is not None:
            self.best_group.button(best).setChecked(True)

    def save_round(self) -> None:
        from muse_desktop.evaluation.compare import rate

        best = self.best_group.checkedId()
        for position, (answer_id, buttons) in enumerate(self.score_boxes):
            rate(self.store, answer_id, *[b.value() for b in buttons], best=position == best)
        self.round_index += 1
        if self.round_index < len(self.rounds):
            self.show_round()
            self._focus_first_score()  # the pressed button's question is gone: on to the next one's first score
            widgets.announce(self.round_label, self.round_label.text())
        else:
            self.rating.hide()
            self._say("Thank you. All answers are rated.")
            self.show_results()
            self.csv_button.setFocus()

    def _say(self, text: str) -> None:
        self.status.setText(text)
        widgets.announce(self.status, text)

    def _focus_first_score(self) -> None:
        if self.score_boxes:
            first = self.score_boxes[0][1][0]
            first.group.checkedButton().setFocus()

    def show_results(self) -> None:
        from muse_desktop.evaluation.compare import summarize

        self.summary = summarize(self.store)
        self.chart.show_summary(self.summary)
        if self.summary.models:
            self.best_label.setText("Picked as best: " + ", ".join(
                f"{model} {count} times" for model, count in self.summary.best_counts.items()))
        self.csv_button.setEnabled(bool(self.summary.rows))

    def save_csv(self) -> None:
        from muse_desktop.evaluation.compare import export_csv

        path, _ = QFileDialog.getSaveFileName(self, "Save the ratings", str(Path.home() / "ratings.csv"),
                                              "CSV (*.csv)")
        if path:
            export_csv(self.summary, path)
            self.status.setText(f"Saved to {path}.")

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.worker.thread.wait(30000)
