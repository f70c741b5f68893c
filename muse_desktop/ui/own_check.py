"""The person's own blind check of their new add-on: answers A, B, C without names; pick the best.

The window writes the answers on a worker (muse_desktop.evaluation.own_check does the
work), then shows one question at a time, and at the end says in plain words how often
each answer was picked and whether the new model is now used for the person.
"""

from __future__ import annotations

import string
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QProgressBar,
    QScrollArea,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.evaluation import own_check
from muse_desktop.ui import widgets
from muse_desktop.ui.theme import BASE_POINT_SIZE
from muse_desktop.ui.workers import EventWorker, start_worker

INTRO = ("MUsE asks your own kinds of questions to a few models: your new one and others. You see the answers "
         "without names, in a new order each time. Pick the answer you like best. Giving marks is up to you.")


BEST, PICKED = "This one is best", "✓ Picked as best"
ANSWER_SIZE = 1.2  # the answers' text, times the window's


def letter(position: int) -> str:
    return string.ascii_uppercase[position]


class AnswerBox(QGroupBox):
    """One answer: its words (big), "This one is best", and optional marks 1–5."""

    def __init__(self, position: int, answer: dict, zoom_percent: int = 100):
        name = f"Answer {letter(position)}"
        super().__init__(name)
        self.answer_id = answer["id"]
        self.setAccessibleName(name)
        layout = QVBoxLayout(self)
        self.text = widgets.label(answer["answer"] or "(This model wrote nothing.)", name=name)
        self.text.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        # The answers a little larger than the rest (the theme's sheet sets every font size, so a sheet here too).
        self.text.setStyleSheet(f"font-size: {round(BASE_POINT_SIZE * zoom_percent / 100 * ANSWER_SIZE)}pt;")
        layout.addWidget(self.text)
        row = QHBoxLayout()
        # Each "This one is best" is its own Tab stop (in an exclusive group they would be one, reached
        # with the arrows); OwnCheckWindow.choose() keeps one pick a question.
        self.best = widgets.button(PICKED if answer["best"] else BEST, f"{name} is the best")
        self.best.setCheckable(True)
        row.addWidget(self.best)

        row.addSpacing(16)
        self.marks_word = widgets.label("Marks (if you like):", "muted")
        self.marks_word.setWordWrap(False)
        row.addWidget(self.marks_word)
        self.marks = QButtonGroup(self)
        for mark in range(1, 6):
            button = widgets.button(str(mark), f"{name}: {mark} of 5")
            button.setObjectName("score")
            button.setCheckable(True)
            self.marks.addButton(button, mark)
            row.addWidget(button)
        row.addStretch(1)
        layout.addLayout(row)
        if answer.get("rating"):
            self.marks.button(answer["rating"]).setChecked(True)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        # As wide with either words, so the marks beside it never move (the sheet's font is known now).
        self.best.ensurePolished()
        words = max(self.best.fontMetrics().horizontalAdvance(text) for text in (BEST, PICKED))
        self.best.setMinimumWidth(words + 2 * self.best.fontMetrics().averageCharWidth() + 40)
        super().showEvent(event)


class OwnCheckWindow(QDialog):
    """A person's blind check of one new add-on (``adapter_path``), from writing the answers to the decision."""

    decided = Signal(bool, str)  # kept, the add-on's path: the chat puts the person's add-on on when kept

    def __init__(self, parent, settings, store, person_id: int, adapter_path: str, seed: int | None = None,
                 max_tokens: int = own_check.MAX_TOKENS, count: int = own_check.QUESTIONS):
        super().__init__(parent)
        self.settings, self.store, self.person_id = settings, store, person_id
        self.adapter_path = str(adapter_path)
        self.seed, self.max_tokens, self.count = seed, max_tokens, count
        self.worker: EventWorker | None = None
        self.check: int | None = None
        self.rounds: list[list[dict]] = []
        self.round_index = 0
        self.decision: own_check.Decision | None = None
        self.setWindowTitle("Try your new model")
        self.setAccessibleName("Try your new model")
        sheet = parent.window().styleSheet() if parent is not None else ""
        if not sheet:
            from muse_desktop.household.settings import Theme
            from muse_desktop.ui.theme import stylesheet

            theme = settings.theme if settings.theme != Theme.AUTO else Theme.NORMAL
            sheet = stylesheet(theme, settings.zoom_percent)
        self.setStyleSheet(sheet)

        layout = QVBoxLayout(self)
        self.title = widgets.label("Try your new model", "heading")
        layout.addWidget(self.title)
        self.pages = QStackedWidget()
        layout.addWidget(self.pages, 1)

        # 1. writing the answers (meanwhile the person reads what comes)
        self.preparing = QWidget()
        box = QVBoxLayout(self.preparing)
        self.intro = widgets.label(INTRO)
        box.addWidget(self.intro)
        self.status = widgets.label("Getting ready…", name="What MUsE is doing")
        box.addWidget(self.status)
        self.progress = QProgressBar()
        self.progress.setAccessibleName("Answers written")
        self.progress.setTextVisible(False)
        box.addWidget(self.progress)
        self.stop_button = widgets.button("Stop", "Stop writing the answers and close", self.stop)
        box.addWidget(self.stop_button, 0, Qt.AlignLeft)
        box.addStretch(1)
        self.pages.addWidget(self.preparing)

        # 2. one question at a time
        self.asking = QWidget()
        box = QVBoxLayout(self.asking)
        box.setContentsMargins(0, 0, 0, 0)
        self.round_label = self.title  # "Question 1 of 4" takes the title's place: more room for the answers
        self.question = widgets.label(name="The question")
        self.question.setObjectName("heading")
        box.addWidget(self.question)
        holder = QWidget()
        self.answers_box = QVBoxLayout(holder)
        self.answers_box.setContentsMargins(0, 0, 8, 0)
        self.answers_box.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(holder)
        self.scroll.setAccessibleName("The answers")
        self.scroll.setFocusPolicy(Qt.NoFocus)  # Tab goes to the buttons inside; the area follows the focus
        box.addWidget(self.scroll, 1)
        row = QHBoxLayout()
        self.hint = widgets.label("Press “This one is best” under the answer you like most.", "muted")
        row.addWidget(self.hint, 1)
        self.next_button = widgets.button("Next question", "Go on to the next question", self.next_round,
                                          primary=True)
        row.addWidget(self.next_button)
        box.addLayout(row)
        self.pages.addWidget(self.asking)

        # 3. the counts and the decision
        self.result = QWidget()
        box = QVBoxLayout(self.result)
        box.setContentsMargins(0, 0, 0, 0)
        words = QWidget()
        inner = QVBoxLayout(words)
        self.result_words = widgets.label(name="The result")
        self.result_words.setStyleSheet(f"font-size: {round(BASE_POINT_SIZE * settings.zoom_percent / 100 * ANSWER_SIZE)}pt;"
                                        " font-weight: bold;")
        inner.addWidget(self.result_words)
        self.result_detail = widgets.label(style="muted", name="Earlier tries")
        inner.addWidget(self.result_detail)
        inner.addStretch(1)
        result_scroll = QScrollArea()
        result_scroll.setWidgetResizable(True)
        result_scroll.setFrameShape(QFrame.NoFrame)
        result_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        result_scroll.setWidget(words)
        result_scroll.setAccessibleName("The result")
        box.addWidget(result_scroll, 1)
        row = QHBoxLayout()
        self.anyway_button = widgets.button("Use my new model anyway", "Use the new model for me even so",
                                            self.use_anyway)
        row.addWidget(self.anyway_button)
        self.close_button = widgets.button("Close", "Close this window", self.accept, primary=True)
        row.addWidget(self.close_button)
        row.addStretch(1)
        box.addLayout(row)
        self.pages.addWidget(self.result)

        self.boxes: list[AnswerBox] = []
        QTimer.singleShot(0, self.start)

    # -- writing the answers ---------------------------------------------------------------

    def start(self) -> None:
        if self.check is not None or self.worker is not None:
            return
        from muse_desktop.chat.engine import EngineSettings

        try:
            self.check = own_check.new_check(self.store, self.settings, self.person_id, self.adapter_path,
                                             seed=self.seed, count=self.count)
        except own_check.OwnCheckError as exc:
            self._end_early(exc.for_person())
            return
        engine = EngineSettings(threads=self.settings.threads, context_length=self.settings.context_length,
                                long_context=self.settings.long_context)
        path, check, model = self.store.path, self.check, self.settings.model_path
        contenders = len(self.store.own_check(check)["models"])
        self._say(f"MUsE is writing the answers of {contenders} models to your questions. This takes a little "
                  "while…")
        start_worker(self, lambda token: own_check.generate(path, check, model, cancel=token,
                                                            max_tokens=self.max_tokens, engine_settings=engine),
                     lambda: None, done=lambda _event: self.start_asking(), failed=self._end_early,
                     progress=self._progress)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        widgets.announce(self.status, text)

    def _progress(self, done: float, total: float, _unit: str, message: str) -> None:
        self.progress.setRange(0, max(int(total), 1))
        self.progress.setValue(int(done))
        self.status.setText(f"{message}…" if done < total else "All answers are written.")

    def _end_early(self, message: str) -> None:
        self.result_words.setText(message)
        self.result_detail.setText("Nothing was changed.")
        self.anyway_button.hide()
        self.pages.setCurrentWidget(self.result)
        self.close_button.setFocus()
        widgets.announce(self.result_words, message)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        self.reject()

    # -- one question at a time ----------------------------------------------------------

    def start_asking(self) -> None:
        self.rounds = own_check.rounds(self.store, self.check)
        self.round_index = 0
        self.pages.setCurrentWidget(self.asking)
        self.show_round()

    def show_round(self) -> None:
        for box in self.boxes:
            self.answers_box.removeWidget(box)
            box.hide()
            box.deleteLater()
        self.boxes = []
        current = self.rounds[self.round_index]
        self.round_label.setText(f"Question {self.round_index + 1} of {len(self.rounds)}")
        self.question.setText(f"“{current[0]['question']}”")
        for position, answer in enumerate(current):
            box = AnswerBox(position, answer, self.settings.zoom_percent)
            box.best.clicked.connect(lambda _checked=False, p=position: self.choose(p))
            box.marks.idClicked.connect(lambda mark, p=position: self.give_marks(p, mark))
            if answer["best"]:
                box.best.setChecked(True)
            self.answers_box.insertWidget(len(self.boxes), box)  # before the stretch
            box.show()  # now, not when the layout gets to it: the focus goes to its button below
            self.boxes.append(box)
        last = self.round_index == len(self.rounds) - 1
        self.next_button.setText("See the result" if last else "Next question")
        self.next_button.setAccessibleDescription("See how often you picked each model" if last
                                                  else "Go on to the next question")
        self.next_button.setEnabled(any(a["best"] for a in current))
        self.scroll.verticalScrollBar().setValue(0)
        self.boxes[0].best.setFocus()
        widgets.announce(self.question, f"{self.round_label.text()}: {current[0]['question']}")

    def choose(self, position: int) -> None:
        """This answer is the best of the question: stored at once."""
        box = self.boxes[position]
        box.best.setChecked(True)
        for other in self.boxes:  # the pick is said in words too, not only by the button's colour
            other.best.setChecked(other is box)
            other.best.setText(PICKED if other is box else BEST)
        own_check.pick(self.store, self.check, self.round_index, box.answer_id)
        for row in self.rounds[self.round_index]:
            row["best"] = int(row["id"] == box.answer_id)
        self.next_button.setEnabled(True)
        self.hint.setText(f"You picked answer {letter(position)}.")

    def give_marks(self, position: int, mark: int) -> None:
        box = self.boxes[position]
        own_check.rate(self.store, self.check, box.answer_id, mark)
        self.rounds[self.round_index][position]["rating"] = mark

    def next_round(self) -> None:
        if not any(a["best"] for a in self.rounds[self.round_index]):
            return
        self.round_index += 1
        self.hint.setText("Press “This one is best” under the answer you like most.")
        if self.round_index < len(self.rounds):
            self.show_round()
        else:
            self.finish()

    # -- the result ------------------------------------------------------------------------

    def finish(self, choose_anyway: bool = False) -> None:
        self.decision = own_check.decide(self.store, self.check, choose_anyway=choose_anyway)
        self.result_words.setText(self.decision.message)
        earlier = [c for c in own_check.checks_for(self.store, self.person_id)
                   if c["id"] != self.check and c["decision"] is not None]
        if earlier:
            lines = []
            for past in earlier[:3]:
                counts = past["tally"]
                kept = "used" if past["decision"]["kept"] else "not used"
                lines.append(f"{past['created_at'][:10]}, {counts.get('new', 0)} of {past['questions']} for the "
                             f"new model, {counts.get('baseline', 0)} for the usual MUsE ({kept})")
            self.result_detail.setText("Earlier tries: " + "; ".join(lines) + ".")
        else:
            self.result_detail.setText(f"The new model’s file: {Path(self.adapter_path).name}")
        self.title.setText("Your new model: the result")
        self.anyway_button.setVisible(not self.decision.kept)
        self.pages.setCurrentWidget(self.result)
        (self.close_button if self.decision.kept else self.anyway_button).setFocus()
        widgets.announce(self.result_words, self.decision.message)
        self.decided.emit(self.decision.kept, self.adapter_path)

    def use_anyway(self) -> None:
        self.finish(choose_anyway=True)

    def done(self, code: int) -> None:  # closing while the answers are written stops them
        if self.worker is not None:
            self.worker.cancel()
            self.worker.thread.wait(30000)
        super().done(code)
