"""The conversation page: open a GGUF model, ask, and read answers as they arrive."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from muse_desktop.base.events import Done, Log
from muse_desktop.base.fileio import atomic_write_text
from muse_desktop.household.settings import Settings
from muse_desktop.speech.speaker import Speaker
from muse_desktop.chat.store import Store
from muse_desktop.ui import widgets
from muse_desktop.ui.workers import EventWorker, start_worker
from muse_desktop.chat.usertypes import UserType


# What the add-on control offers: words, and the scale llama.cpp applies (0 is the base alone).
ADDON_STRENGTHS = (("Add-on: full", 1.0), ("Add-on: half", 0.5), ("Add-on: off", 0.0))
NO_ANSWER = "No answer came to this question. Press “Try again”, or ask it again."
# The demo model in plain words (the terminal's notice says "random weights" to developers).
PRACTICE_MODEL = "Practice model: it has not learnt anything, so its answers are nonsense."
WRITING = "MUsE is writing an answer…"  # a streaming bubble's name until the answer is complete
NOTE = "note"  # a bubble that is not a message: the mark of a question without an answer


class Bubble(QLabel):
    """One message; selectable text. Its accessible name is its text (what a screen reader
    reads); who said it is the description, so a fixed name never hides the words."""

    def __init__(self, role: str, text: str):
        super().__init__(text)
        self.role = role
        self.setObjectName("userBubble" if role == "user" else "assistantBubble")
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAccessibleDescription({"user": "You said", NOTE: "No answer"}.get(role, "MUsE said"))

    def start_writing(self) -> None:
        """While the answer streams in, the name stays fixed: a screen reader is not told every word
        (each change of a label's text is a name change on the bus). The whole answer is announced once."""
        self.setAccessibleName(WRITING)

    def append(self, text: str) -> None:
        self.setText(self.text() + text)

    def finish_writing(self) -> None:
        """The answer is complete (or stopped, or failed): the name is the text again, with one change."""
        if self.accessibleName():
            self.setAccessibleName("")


class ChatPage(QWidget):
    back_requested = Signal()
    people_requested = Signal()  # "Change person": back to "Who is using MUsE?"
    model_page_requested = Signal()
    model_ready = Signal()
    answer_done = Signal()
    problem = Signal(str)

    def __init__(self, settings: Settings, store: Store, on_settings_changed):
        super().__init__()
        self.settings = settings
        self.store = store
        self.on_settings_changed = on_settings_changed
        self.user_type: UserType | None = None
        self.engine = None
        self.worker: EventWorker | None = None
        self.conversation_id: int | None = None
        self.answer_bubble: Bubble | None = None
        # (path, add-ons) opened once the current work has finished
        self._pending_model: tuple[str, list[str]] | None = None
        self._loading: str | None = None  # the model file being opened in the background
        self._question_id: int | None = None  # the stored question being answered now
        self._choosing = False  # preference mode's four answers are being written
        self._focus_after = None  # where focus goes back when the current work ends
        self.closed_controls: tuple = ()  # closed by the caregiver's lock: the end of a job must not reopen them
        self.person = None  # the household's person using MUsE now (a store Profile), or None

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.who = widgets.label(style="heading")
        top.addWidget(self.who, 1)
        self.change = widgets.button("Change who I am", "Change who I am", self.back_requested)
        top.addWidget(self.change)
        self.change_person = widgets.button("Change person", "Someone else is using MUsE now", self.people_requested)
        top.addWidget(self.change_person)
        layout.addLayout(top)
        # Which model answers, in plain words, near the top: "Answering: MUsE, with Grandma's own add-on".
        self.answering = widgets.label(name="Which model is answering")
        self.answering.setObjectName("muted")
        self.answering.hide()
        layout.addWidget(self.answering)

        model_row = QHBoxLayout()
        self.model_label = widgets.label("No model open yet.", name="Model")
        model_row.addWidget(self.model_label, 1)
        self.change_model = widgets.button("Change model", "Choose another model", self.model_page_requested)
        model_row.addWidget(self.change_model)
        layout.addLayout(model_row)
        self.status = widgets.label(style="muted", name="Status")
        layout.addWidget(self.status)

        middle = QHBoxLayout()
        self.history = QListWidget()
        self.history.setAccessibleName("Earlier conversations")
        self.history.setWordWrap(True)
        self.history.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.history.itemActivated.connect(self._open_item)
        self.history.itemClicked.connect(self._open_item)
        self.side = QWidget()
        self.side.setMaximumWidth(300)
        side = QVBoxLayout(self.side)
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.history, 1)
        # Acting on the selected conversation (or the open one): one button each, no hidden menus.
        self.rename_button = widgets.button("Rename", "Rename the selected conversation", self.rename_conversation)
        self.delete_button = widgets.button("Delete", "Delete the selected conversation", self.delete_conversation)
        self.export_button = widgets.button("Save as…", "Save the selected conversation to a file",
                                            self.export_conversation)
        for control in (self.rename_button, self.delete_button, self.export_button):
            control.setObjectName("compact")  # less padding, still a 44 px target
            side.addWidget(control)
        middle.addWidget(self.side)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setAccessibleName("Conversation")
        holder = QWidget()
        self.messages = QVBoxLayout(holder)
        self.messages.addStretch(1)
        self.scroll.setWidget(holder)
        middle.addWidget(self.scroll, 1)
        layout.addLayout(middle, 1)
        from muse_desktop.ui.preference import PreferencePanel

        self.preference_panel = PreferencePanel()
        self.preference_panel.chosen.connect(self._preference_chosen)
        layout.addWidget(self.preference_panel, 4)  # the candidates get most of the room while shown
        self._then = None  # work to start when the current worker has finished

        # The question box gets its own full-width row, so it stays usable at 200 % zoom.
        self.input = QLineEdit()
        self.input.setPlaceholderText("Type your question here")
        self.input.setAccessibleName("Your question")
        self.input.setMinimumHeight(48)
        self.input.returnPressed.connect(self.send)
        from muse_desktop.ui.speech_controls import SpeechControls

        self.speech = SpeechControls(self)  # the Speak button sits beside the question box
        question_row = QHBoxLayout()
        question_row.addWidget(self.input, 1)
        question_row.addWidget(self.speech.speak_button)
        layout.addLayout(question_row)
        layout.addWidget(self.speech.meter)
        self.send_button = widgets.button("Send", "Send the question", self.send, primary=True)
        self.stop_button = widgets.button("Stop", "Stop the answer", self.stop)
        self.stop_button.setEnabled(False)
        self.regenerate_button = widgets.button("Try again", "Answer the last question again", self.regenerate)
        self.copy_button = widgets.button("Copy", "Copy the last answer", self.copy_answer)
        self.speaker = Speaker.from_system()
        self.read_button = widgets.button("Read aloud", "Read the last answer aloud", self.read_aloud)
        if not self.speaker.available and not self.speech.natural_available():
            self.read_button.setText("Read aloud (not available)")
            self.read_button.setToolTip(self.speaker.unavailable_reason)
        self.new_button = widgets.button("New chat", "Start a new conversation", self.new_conversation)
        # The list of earlier conversations can be hidden to give the conversation room
        # (it is hidden by itself at large zoom; see fit_zoom).
        self.history_toggle = widgets.button("Conversations", "Show or hide earlier conversations")
        self.history_toggle.setCheckable(True)
        self.history_toggle.setChecked(True)
        self.history_toggle.toggled.connect(lambda shown: self.side.setVisible(shown and not self.simple))
        self.simple = False
        # Shown only with an add-on (MUsE as a small extra part): how much of it answers.
        self.addon_strength = widgets.ChoiceBox()
        self.addon_strength.setAccessibleName("Add-on")  # the word on the box: "Add-on: full"
        self.addon_strength.setAccessibleDescription("How much the add-on is used")
        self.addon_strength.setMinimumHeight(44)
        for text, scale in ADDON_STRENGTHS:
            self.addon_strength.addItem(text, scale)
        self.addon_strength.currentIndexChanged.connect(self._strength_chosen)
        self.addon_strength.hide()
        self.preference_toggle = widgets.button("Choose from 4", "Preference mode: four answers to choose from")
        self.preference_toggle.setCheckable(True)
        self.preference_toggle.setToolTip("Each question gets four answers; you mark the best and the worst.")
        # At large text the row keeps Send, Stop, Read aloud and More; the rest moves under More.
        self.more_button = widgets.button("More", "More things to do: try again, copy, new chat, conversations")
        self.more_menu = QMenu(self.more_button)
        self.more_button.setMenu(self.more_menu)
        self.model_info = self.more_menu.addAction(self.model_label.text())
        self.model_info.triggered.connect(lambda: self.say(self.model_label.text()))  # reachable by arrows
        self._more_actions = []
        for control in (self.regenerate_button, self.copy_button, self.new_button, self.preference_toggle,
                        self.history_toggle, self.change_model, self.change, self.change_person):
            action = self.more_menu.addAction(control.text())
            action.setCheckable(control.isCheckable())
            action.triggered.connect(lambda _=False, c=control: c.click())
            if control.isCheckable():
                control.toggled.connect(action.setChecked)
                action.setChecked(control.isChecked())
            self._more_actions.append((control, action))
        self.more_button.hide()
        self.compact = False
        # One flowing row that wraps: every label stays whole at 200 % zoom and in narrow windows.
        buttons = QWidget()
        flow = widgets.FlowLayout(buttons)
        flow.setContentsMargins(0, 0, 0, 0)
        for widget in (self.send_button, self.stop_button, self.regenerate_button, self.copy_button,
                       self.read_button, self.speech.pause_button, self.new_button, self.preference_toggle,
                       self.history_toggle, self.addon_strength, self.more_button):
            flow.addWidget(widget)
        layout.addWidget(buttons)
        self.answer_done.connect(self._read_if_wanted)

    def set_simple(self, on: bool) -> None:
        """Simple mode: the conversation, the question box and big Send / Stop / Read aloud / New chat."""
        self.simple = on
        for control in (self.regenerate_button, self.copy_button, self.history_toggle, self.preference_toggle):
            control.setVisible(not on)
        self.side.setVisible(not on and self.history_toggle.isChecked())
        self.speech.set_simple(on)
        self._show_compact()
        for control in (self.send_button, self.stop_button, self.read_button, self.new_button,
                        self.speech.pause_button):
            control.setMinimumHeight(80 if on else 0)
            control.setMinimumWidth(160 if on else 0)

    def fit_zoom(self, zoom_percent: int) -> None:
        """From 150 % the conversation gets the room: the list folds away and one row of big
        buttons stays (Send, Stop, Read aloud, More); everything else is under More."""
        self.compact = zoom_percent >= 150
        self.history_toggle.setChecked(not self.compact)
        self._show_compact()

    def _show_compact(self) -> None:
        for control, action in self._more_actions:
            # Under More in the compact row; the lock's closed controls stay closed there too.
            shown = not (self.simple and control in (self.regenerate_button, self.copy_button, self.history_toggle,
                                                     self.preference_toggle, self.change, self.change_model,
                                                     self.change_person))
            shown = shown and control not in self.closed_controls
            action.setVisible(shown and self.compact)
            control.setVisible(shown and not self.compact)
        self.more_button.setVisible(self.compact)
        # Speak no taller than the question box beside it: at 200 % the conversation needs the room.
        self.speech.speak_button.setMaximumHeight(self.input.sizeHint().height() if self.compact else 16777215)
        # The model line folds under More too (as its first, read-only entry); the heading is
        # set in the body size: at 200 % the two took a fifth of a laptop screen.
        self.model_label.setVisible(not self.compact)
        self.model_info.setVisible(self.compact)
        self.who.setObjectName("" if self.compact else "heading")
        self.who.setStyleSheet(self.who.styleSheet())  # the new object name takes effect now
        self.layout().setSpacing(2 if self.compact else -1)
        margin = 2 if self.compact else 9
        self.layout().setContentsMargins(margin, margin, margin, margin)

    # -- who and which model ---------------------------------------------------------------

    def set_user_type(self, user_type: UserType, open_saved_model: bool = True) -> None:
        if self.user_type is not None and user_type.prompt_name != self.user_type.prompt_name:
            self.new_conversation()  # a conversation is worded for one user type
        self.user_type = user_type
        self.who.setText(f"Answers for: {user_type.display_name}")
        self.refresh_history()
        if open_saved_model and self._loading is None:
            self.preload(user_type)

    def preload(self, user_type: UserType | None) -> None:
        """Open the saved model in the background (at launch, while the first page shows).

        With ``user_type`` (a returning person) its instruction is put in the model's
        cache too, so the first question evaluates only its own words.
        """
        if (self.engine is not None or self._loading is not None or not self.settings.model_path
                or not Path(self.settings.model_path).exists()):
            return
        self.load_model(self.settings.model_path, self.wanted_adapters(),
                        prepare_for=user_type.prompt_name if user_type is not None else None)

    def wanted_adapters(self) -> list[str]:
        """The add-ons for the computer's model: MUsE's (when installed as one), then the person's own."""
        from muse_desktop.household.people import adapters_for

        return [path for path, _scale in adapters_for(self.settings, self.person) if Path(path).exists()]

    def _scale_of(self, path: str) -> float:
        if path == self.settings.adapter_path:
            return self.settings.adapter_scale
        if self.person is not None and path == self.person.adapter_path:
            return self.person.adapter_scale
        return 1.0

    def set_person(self, person) -> None:
        """The person using MUsE now: their conversations, and their add-on in the open model.

        When the open model is the computer's model, only the add-ons change (llama.cpp
        applies them without reading the model again); otherwise the model is reopened.
        """

        changed = (self.person.id if self.person else 0) != (person.id if person else 0)
        self.person = person
        if changed and not self.is_answering:
            self.conversation_id = None
            self._clear_bubbles()
        self.refresh_history()
        if self.engine is not None and not self.busy and self.settings.model_path:
            if self.engine.model_path == Path(self.settings.model_path):
                self._fit_adapters()
            else:
                self.load_model(self.settings.model_path, self.wanted_adapters())
        self.show_answering()  # (a model still opening gets the person's add-on when it is open: _loaded)

    @property
    def is_answering(self) -> bool:
        """An answer is being written or four wait for a choice (opening a model is not answering)."""
        return (self.worker is not None and self._loading is None) or self._choosing

    def _fit_adapters(self) -> None:
        """The open model gets exactly the add-ons wanted now (the same file: no reopening)."""
        from muse_desktop.chat.engine import AdapterSpec, ModelError

        wanted = self.wanted_adapters()
        if [s.path for s in self.engine.adapters] == wanted and all(
                s.scale == self._scale_of(s.path) for s in self.engine.adapters):
            return
        try:
            self.engine.set_adapters([AdapterSpec(path, self._scale_of(path)) for path in wanted])
        except ModelError as exc:  # e.g. an add-on made for another model
            own = self.person.adapter_path if self.person is not None else ""
            self.engine.set_adapters([AdapterSpec(p, self._scale_of(p)) for p in wanted if p != own])
            self.say(f"{self.person.name}'s own add-on cannot be used with this model ({exc}).")

    def show_answering(self) -> None:
        """Say which model answers, with whose add-on (a label a screen reader reads by its words)."""
        from muse_desktop.household.people import answering_text

        if self.engine is None:
            self.answering.hide()
            return
        path = self.engine.model_path
        if path.name.startswith("muse-demo-"):
            name = "the practice model"
        elif self.settings.adapter_path or "muse" in path.stem.lower():
            name = "MUsE"
        else:
            name = path.stem
        text = answering_text(name, self.person, [spec.path for spec in self.engine.adapters])
        self.answering.setText(text)
        self.answering.setAccessibleName(text)
        self.answering.show()

    def load_model(self, path: str, adapters: list[str] | None = None, prepare_for: str | None = None) -> None:
        """Open a GGUF model (with GGUF LoRA adapters applied at run time) off the GUI thread."""
        if self.busy:
            self._pending_model = (path, list(adapters or []))
            return
        self._loading = path
        from muse_desktop.chat.engine import AdapterSpec, ChatEngine, EngineSettings

        from muse_desktop.base.paths import user_dirs

        settings = EngineSettings(threads=self.settings.threads, context_length=self.settings.context_length,
                                  gpu_layers=self.settings.gpu_layers, long_context=self.settings.long_context,
                                  prefix_state_dir=str(user_dirs().cache / "prefix-state"))

        specs = [AdapterSpec(adapter, self._scale_of(adapter)) for adapter in adapters or []]

        template = self.settings.instruction_template or None

        def events(_token):
            engine = ChatEngine(path, settings, specs)
            if prepare_for is not None:  # the instruction restored (or evaluated and kept) now
                note = engine.prepare(prepare_for, template)
                if note:
                    yield Log(note, "warning")
            yield Done("loaded", data={"engine": engine})

        self.status.setText(f"Opening {Path(path).name}…")
        self._run(events, on_done=lambda event: self._loaded(path, event.data["engine"], adapters or []))

    def reopen_model(self) -> None:
        """Open the current model again (with its add-on), e.g. after a change to how much it remembers."""
        if self.engine is not None and self.settings.model_path:
            adapters = [spec.path for spec in self.engine.adapters]
            self.load_model(self.settings.model_path, adapters)

    def _loaded(self, path: str, engine, adapters: list[str] | None = None) -> None:
        if self.engine is not None:
            self.engine.close()
        self.engine = engine
        is_demo = Path(path).name.startswith("muse-demo-")
        # The file's name without ".gguf": a person reads the model's name, not a file type.
        label = PRACTICE_MODEL if is_demo else f"Model: {Path(path).stem}"
        # A person's own add-on is theirs, not the computer's (whoever was chosen while it opened).
        theirs = {p.adapter_path for p in self.store.profiles() if p.adapter_path}
        computer = [a for a in adapters or [] if a not in theirs]
        if computer:
            label += " with the add-on " + ", ".join(Path(a).stem for a in computer)
        self.model_label.setText(label)
        self.model_info.setText(label)
        ready = "Ready. Type a question and press Enter."
        self.say(f"{engine.context_note} {ready}" if engine.context_note else ready)
        adapter = (computer or [""])[0]
        if self.settings.model_path != path or self.settings.adapter_path != adapter:
            self.settings.model_path = path
            self.settings.adapter_path = adapter  # reopened with the model next time
            self.settings.adapter_scale = next((s.scale for s in engine.adapters if s.path == adapter), 1.0)
            self.on_settings_changed()
        if path == self.settings.model_path:
            self._fit_adapters()  # someone else may have been chosen while the model was opening
        self._show_strength(engine)
        self.show_answering()
        self.model_ready.emit()

    def _show_strength(self, engine) -> None:
        # The strength is the computer's add-on's (MUsE's); a person's own add-on stays as they made it.
        loaded = [s for s in engine.adapters if s.path == self.settings.adapter_path]
        self.addon_strength.setVisible(bool(loaded))
        if loaded:
            nearest = min(range(len(ADDON_STRENGTHS)), key=lambda i: abs(ADDON_STRENGTHS[i][1] - loaded[0].scale))
            self.addon_strength.blockSignals(True)
            self.addon_strength.setCurrentIndex(nearest)
            self.addon_strength.blockSignals(False)

    def _strength_chosen(self, index: int) -> None:
        """Blend the add-on in (or switch it off) without reopening the model."""
        from muse_desktop.chat.engine import AdapterSpec

        if self.engine is None or not any(s.path == self.settings.adapter_path for s in self.engine.adapters):
            return
        if self.busy:  # the model is answering: it cannot change in the middle of an answer
            self._show_strength(self.engine)
            self.status.setText("Wait until the answer is finished, then choose again.")
            return
        scale = float(self.addon_strength.itemData(index))
        self.engine.set_adapters([AdapterSpec(s.path, scale if s.path == self.settings.adapter_path else s.scale)
                                  for s in self.engine.adapters])
        self.settings.adapter_scale = scale
        self.on_settings_changed()
        self.status.setText(f"{self.addon_strength.itemText(index)}. The next answer uses it.")

    # -- asking ----------------------------------------------------------------------------

    def say(self, text: str, assertive: bool = False) -> None:
        """Show a status that matters and have screen readers announce it (thinking, stopped, failed)."""
        self.status.setText(text)
        widgets.announce(self.status, text, assertive)

    @property
    def profile_id(self) -> int | None:
        """The person whose conversations and choices these are (None: nobody chosen)."""
        return self.settings.person_id or None

    @property
    def busy(self) -> bool:
        """An answer is being written, or four answers wait for the person's choice."""
        return self.worker is not None or self._choosing

    def add_bubble(self, role: str, text: str) -> Bubble:
        bubble = Bubble(role, text)
        self.messages.insertWidget(self.messages.count() - 1, bubble)
        bar = self.scroll.verticalScrollBar()
        bar.rangeChanged.connect(lambda _min, maximum: bar.setValue(maximum))
        return bubble

    def send(self) -> None:
        question = self.input.text().strip()
        if not question or self.busy or self.user_type is None:
            return
        if self.engine is None:
            self.say("There is no model yet: press “Change model” to choose one.")
            return
        if self.conversation_id is None:
            title = question if len(question) <= 48 else question[:47] + "…"
            self.conversation_id = self.store.create_conversation(self.user_type.prompt_name, title,
                                                                  profile_id=self.profile_id).id
        self._question_id = self.store.add_message(self.conversation_id, "user", question).id
        self.add_bubble("user", question)
        self.input.clear()
        self.refresh_history()
        if self._refused(question):
            return
        if self.preference_toggle.isChecked():
            self._start_candidates()
            return
        self._ask(self.store.turns(self.conversation_id))

    def _refused(self, question: str) -> bool:
        """The kiosk's scope check, on every route to the model; a refusal is the answer, the model is not asked."""
        from muse_desktop.household.scope import check_question

        verdict = check_question(question, self.settings.kiosk_mode)
        if verdict.allowed:
            return False
        self.store.add_message(self.conversation_id, "assistant", verdict.refusal,
                               settings={"refused": "no guard" if verdict.problem else "off-topic"})
        self._question_id = None
        self.add_bubble("assistant", verdict.refusal)
        self.say(verdict.problem or "That question is outside what this kiosk is for.")
        if verdict.problem:
            self.problem.emit(verdict.problem)
        self.answer_done.emit()
        return True

    def _no_answer(self, reason: str) -> None:
        """The question got no answer: it stays, marked, and is left out of later prompts."""
        if self._question_id is not None:
            self.store.mark_unanswered(self._question_id, reason)
            self._question_id = None
        if self.answer_bubble is not None and not self.answer_bubble.text().strip():
            self.answer_bubble.role = NOTE
            self.answer_bubble.setAccessibleDescription("No answer")
            self.answer_bubble.setText(NO_ANSWER)
            self.answer_bubble.finish_writing()
        else:
            self.add_bubble(NOTE, NO_ANSWER)
        self.answer_bubble = None

    # -- preference mode ---------------------------------------------------------------------

    def _start_candidates(self) -> None:
        """Write the research grid's candidate answers together (one llama.cpp batch) into the panel."""
        from muse_desktop.evaluation.preferences import DEFAULT_GRID, candidate_records, candidate_requests, parse_grid

        try:
            self._specs = list(parse_grid(self.settings.preference_grid))
        except ValueError as exc:  # a hand-edited setting: say so, use the research grid
            self.status.setText(f"The preference grid setting is not usable ({exc}); using the default.")
            self._specs = list(DEFAULT_GRID)
        self._candidates: list[dict] = []
        self._choosing = True
        self._make_room_for_candidates(True)
        self.preference_panel.start([spec.label() for spec in self._specs])
        self.say("Writing four answers…")
        conversation = self.store.conversation(self.conversation_id)
        engine = self.engine
        requests = candidate_requests(self._specs, conversation.user_type, self.store.turns(self.conversation_id),
                                      self.settings.instruction_template or None)

        def done(event: Done) -> None:
            records = candidate_records(event.data["candidates"], self._specs, requests)
            if records is None:  # Stop ends the whole round
                self._end_candidates()
                self.say("Stopped. Ask again to get four new answers.")
                return
            self._candidates = records
            self.preference_panel.ready()
            self.say("The four answers are ready. Mark the best and the worst answer.")

        self._run(lambda token: engine.generate_batch(requests, cancel=token), on_done=done,
                  candidate_text=self.preference_panel.append)

    def _end_candidates(self) -> None:
        """A round that cannot finish (stopped, failed): the question is kept as one without an answer."""
        self._choosing = False
        self._then = None
        self.preference_panel.setVisible(False)
        self._make_room_for_candidates(False)
        self._no_answer("the four answers were not finished")
        self._release_controls()
        if self.worker is None:
            self._open_pending_model()

    def _make_room_for_candidates(self, on: bool) -> None:
        """While four answers are on screen they get the room; the conversation shows its last lines."""
        self.scroll.setMaximumHeight(170 if on else 16777215)
        self.side.setVisible(not on and not self.simple and self.history_toggle.isChecked())

    def _preference_chosen(self, best: int, worst: int, reason: str) -> None:
        if not self._choosing:
            return
        self._choosing = False
        self._release_controls()
        self._question_id = None
        self._make_room_for_candidates(False)
        turns = self.store.turns(self.conversation_id)  # the valid conversation the candidates answered
        context = [{"role": t.role, "content": t.content} for t in turns[:-1]]
        conversation = self.store.conversation(self.conversation_id)
        preference = self.store.add_preference(conversation.user_type, context, turns[-1].content,
                                               self._candidates, best, worst, reason, self.conversation_id,
                                               profile_id=self.profile_id)
        chosen = self._candidates[best]
        self.store.add_message(self.conversation_id, "assistant", chosen["text"],
                               model=Path(self.settings.model_path).name,
                               settings={"preference": preference, "framing": chosen["framing"],
                                         "temperature": chosen["temperature"], "seed": chosen["seed"]})
        self.add_bubble("assistant", chosen["text"])
        self.say("Thank you. The best answer is kept; the conversation goes on from there.")
        self.refresh_history()
        self._open_pending_model()
        self.answer_done.emit()

    def _ask(self, turns, seed: int | None = None) -> None:
        from muse_desktop.chat.engine import default_sampling

        conversation = self.store.conversation(self.conversation_id)
        prompt_name = conversation.user_type
        sampling = default_sampling(prompt_name)
        sampling.seed = seed
        template = self.settings.instruction_template or None
        engine = self.engine
        self.answer_bubble = self.add_bubble("assistant", "")
        self.answer_bubble.start_writing()
        self.say("Thinking…")
        self._run(lambda token: engine.generate(prompt_name, turns, template, sampling, cancel=token),
                  on_done=self._answered, on_text=self.answer_bubble.append)

    def _answered(self, event: Done) -> None:
        data = event.data
        text = data["text"].strip()
        if self.answer_bubble is not None:
            self.answer_bubble.finish_writing()
        if text:
            # Once, when the whole answer is there: token by token would be noise.
            widgets.announce(self.answer_bubble or self, f"MUsE said: {text}")
            self.store.add_message(self.conversation_id, "assistant", text, model=Path(self.settings.model_path).name,
                                   settings=dict(data["sampling"], stopped=data["stopped"]))
            self._question_id = None
            self.answer_bubble = None
        else:  # stopped before any text, or an empty answer
            self._no_answer("stopped before any text" if data["stopped"] == "cancelled" else "the answer was empty")
        if data["stopped"] == "cancelled":
            self.say("Stopped.")
        else:
            self.status.setText("Ready.")
        self.refresh_history()
        self.answer_done.emit()

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        elif self._choosing:  # four answers wait for a choice: Stop leaves the round without one
            self._end_candidates()
            self.status.setText("Stopped. Ask again to get four new answers.")

    def new_conversation(self) -> None:
        if self.busy:
            return
        self.conversation_id = None
        self._clear_bubbles()

    def _clear_bubbles(self) -> None:
        while self.messages.count() > 1:
            item = self.messages.takeAt(0)
            if item.widget():
                item.widget().hide()  # at once: the deletion itself waits for the event loop
                item.widget().deleteLater()

    # -- history, regenerate, copy ------------------------------------------------------

    def refresh_history(self) -> None:
        """The person's earlier conversations worded for the current user type, newest first."""
        self.history.clear()
        if self.user_type is None:
            return
        for conversation in self.store.conversations(self.profile_id):
            if conversation.user_type != self.user_type.prompt_name or (
                    self.profile_id is None and conversation.profile_id is not None):
                continue
            item = QListWidgetItem(f"{conversation.title}\n{conversation.updated_at[:10]}")
            item.setData(Qt.UserRole, conversation.id)
            self.history.addItem(item)

    def _open_item(self, item: QListWidgetItem) -> None:
        self.open_conversation(item.data(Qt.UserRole))

    def open_conversation(self, conversation_id: int) -> None:
        if self.busy:
            return
        self._clear_bubbles()
        self.conversation_id = conversation_id
        self.store.repair_conversation(conversation_id)  # e.g. a question whose answer a crash cut off
        for message in self.store.messages(conversation_id):
            self.add_bubble(message.role, message.content)
            if message.role == "user" and message.settings.get("unanswered"):
                self.add_bubble(NOTE, NO_ANSWER)
        self.status.setText(f"Continuing “{self.store.conversation(conversation_id).title}”.")

    def _selected_conversation(self) -> int | None:
        item = self.history.currentItem()
        if item is not None and item.isSelected():
            return item.data(Qt.UserRole)
        return self.conversation_id

    def rename_conversation(self) -> None:
        conversation_id = self._selected_conversation()
        if conversation_id is None or self.busy:
            self.status.setText("Choose a conversation in the list first.")
            return
        old = self.store.conversation(conversation_id).title
        title, ok = QInputDialog.getText(self, "Rename", "New name for the conversation:", text=old)
        if ok and title.strip():
            self.store.rename_conversation(conversation_id, title.strip())
            self.refresh_history()
            self.status.setText(f"Renamed to “{title.strip()}”.")

    def delete_conversation(self) -> None:
        conversation_id = self._selected_conversation()
        if conversation_id is None or self.busy:
            self.status.setText("Choose a conversation in the list first.")
            return
        title = self.store.conversation(conversation_id).title
        choices = self.store.preference_count(conversation_id)
        also = (f" The {choices} {'choice' if choices == 1 else 'choices'} between answers made in it "
                "will be deleted too." if choices else "")
        answer = QMessageBox.question(self, "Delete",
                                      f"Delete the conversation “{title}”?{also} This cannot be undone.",
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        self.store.delete_conversation(conversation_id)
        if conversation_id == self.conversation_id:
            self.conversation_id = None
            self._clear_bubbles()
        self.refresh_history()
        self.status.setText(f"Deleted “{title}”.")

    def export_conversation(self) -> None:
        conversation_id = self._selected_conversation()
        if conversation_id is None:
            self.status.setText("Choose a conversation in the list first.")
            return
        conversation = self.store.conversation(conversation_id)
        safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in conversation.title).strip() or "conversation"
        path, chosen = QFileDialog.getSaveFileName(self, "Save the conversation", str(Path.home() / f"{safe}.md"),
                                                   "Text with headings (*.md);;Data for programs (*.json)")
        if not path:
            return
        as_json = path.endswith(".json") or "json" in chosen
        if as_json and not path.endswith(".json"):
            path += ".json"
        text = (json.dumps(self.store.export_json(conversation_id), ensure_ascii=False, indent=2) if as_json
                else self.store.export_markdown(conversation_id))
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            self.status.setText(f"Could not save the file ({exc}).")
            return
        self.status.setText(f"Saved to {path}.")

    def _bubbles(self) -> list[Bubble]:
        return [self.messages.itemAt(i).widget() for i in range(self.messages.count() - 1)]

    def copy_answer(self) -> None:
        answers = [b for b in self._bubbles() if b.role == "assistant" and b.text().strip()]
        if answers:
            QGuiApplication.clipboard().setText(answers[-1].text().strip())
            self.say("The answer was copied.")

    def read_aloud(self) -> None:
        """Read the last answer aloud; pressed again while reading, stop."""
        if self.speech.is_reading:
            self.speech.stop_reading()
            return
        last = [b for b in self._bubbles() if b.role == "assistant" and b.text().strip()]
        if last and self.speech.read(last[-1]):  # the natural voice; the system's own is the fallback
            return
        if not self.speaker.available:
            self.say(self.speaker.unavailable_reason)
            return
        if self.speaker.speaking:
            self.speaker.stop()
            self.say("Stopped reading.")
            return
        answers = [b for b in self._bubbles() if b.role == "assistant" and b.text().strip()]
        if answers:
            self.speaker.speak(answers[-1].text().strip())
            self.say("Reading the answer aloud. Press “Read aloud” again to stop.")

    def _read_if_wanted(self) -> None:
        if self.settings.read_aloud and not self.speech.is_reading and not self.speaker.speaking:
            self.read_aloud()

    def regenerate(self) -> None:
        """Answer the last question again (the previous answer is replaced)."""
        if self.busy or self.engine is None or self.conversation_id is None:
            return
        messages = self.store.messages(self.conversation_id)
        if not messages:
            return
        bubbles = self._bubbles()
        if messages[-1].role == "assistant":
            self.store.delete_message(messages[-1].id)
            messages.pop()
        if bubbles and bubbles[-1].role in ("assistant", NOTE):
            bubbles[-1].deleteLater()
            self.messages.removeWidget(bubbles[-1])
        if not messages or messages[-1].role != "user":
            return
        question = messages[-1]
        if question.settings.get("unanswered"):  # asked again: it is a live question once more
            self.store.set_message_settings(question.id, {k: v for k, v in question.settings.items()
                                                          if k != "unanswered"})
        self._question_id = question.id
        if self._refused(question.content):
            return
        self._ask(self.store.turns(self.conversation_id), seed=random.randrange(2**31))

    # -- running work off the GUI thread --------------------------------------------------------

    def _run(self, make_events, on_done, on_text=None, candidate_text=None) -> None:
        self.stop_button.setEnabled(on_text is not None or candidate_text is not None)
        focused = QApplication.focusWidget()
        self._focus_after = focused if focused is not None and self.isAncestorOf(focused) else None
        if focused in self._locked_while_busy():
            # Disabling the pressed button would throw focus on to whatever is next (e.g. "Copy"):
            # put it where the person can act now, on Stop while an answer is written.
            (self.stop_button if self.stop_button.isEnabled() else self.input).setFocus(Qt.OtherFocusReason)
        for control in self._locked_while_busy():
            control.setEnabled(False)
        slots = {"text": on_text} if on_text is not None else {}
        if candidate_text is not None:
            slots["candidate_text"] = candidate_text
        start_worker(self, make_events, self._finished, done=on_done, failed=self._failed,
                     log=lambda message, _level: self.status.setText(message), **slots)

    def _locked_while_busy(self):
        return (self.send_button, self.change_model, self.regenerate_button, self.new_button,
                self.rename_button, self.delete_button, self.export_button)

    def _failed(self, message: str) -> None:
        if self._choosing:
            self._end_candidates()
        elif self._question_id is not None:
            self._no_answer(message)
        self.say(message, assertive=True)
        self.problem.emit(message)

    def _release_controls(self) -> None:
        """What is closed while busy opens again (what the lock closes stays closed)."""
        # While four answers wait for a choice, only Stop (leave the round) stays open.
        self.stop_button.setEnabled(self._choosing)
        for control in self._locked_while_busy():
            control.setEnabled(control not in self.closed_controls and not self._choosing)

    def _open_pending_model(self) -> None:
        pending, self._pending_model = self._pending_model, None
        if pending:
            self.load_model(*pending)

    def _finished(self) -> None:
        self._loading = None  # opened or failed: either way no longer being opened
        for bubble in self._bubbles():  # whatever ended the work, no bubble keeps the "writing" name
            bubble.finish_writing()
        on_stop = QApplication.focusWidget() is self.stop_button
        self._release_controls()
        back, self._focus_after = self._focus_after, None
        if back is self.send_button:
            back = self.input  # after Send, the next question
        if on_stop or QApplication.focusWidget() is None:
            # Back where the work was started ("Try again" stays on "Try again"), else the question box.
            target = back if back is not None and back.isVisible() and back.isEnabled() else self.input
            if self.isVisible():
                target.setFocus(Qt.OtherFocusReason)
        if not self._choosing:
            self._open_pending_model()
        then, self._then = self._then, None
        if then is not None:
            then()

    def shutdown(self) -> None:
        self.speaker.stop()
        self.speech.shutdown()
        if self.worker is not None:
            self.worker.cancel()  # the engine's abort callback ends even a long prompt's evaluation
            self.worker.thread.wait(30000)
        if self.engine is not None:
            self.engine.close()  # while a worker still uses it, the engine frees it when that ends
            self.engine = None
