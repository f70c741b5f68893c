#!/usr/bin/env python3
"""Render the real windows offscreen and save the screenshots in docs/screenshots/.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshots.py MODEL.gguf [--only-laptop]

``--household [MODEL.gguf]`` makes just "Who is using MUsE?" with three people (1366×768 and
1280×720, 100 % and 200 %) and, with a model, the chat's "Answering:" line.

``--own-model`` makes just "Make a model that answers the way I like" mid-run and the
person's blind check (each at 1366×768 and 1280×720, 100 % and 200 %), on the demo model.

``--only-laptop`` makes just the laptop shots (1366×768: 100 %, 200 %, high contrast,
keyboard focus on Send, and Compare's rating at 200 %).

Uses a throwaway MUSE_HOME, so your own settings and conversations are untouched.
With the tiny demo model the answers are nonsense (random weights).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "screenshots"


# About the sizes of the published files, so the choice shows what a person sees without asking the hub:
# Phi-3's shards as listed on the hub; MUsE's adapter from r 64 on the four modules in float32 (PEFT's default).
REAL_SIZES = {
    "microsoft/Phi-3-mini-128k-instruct": {"model-00001-of-00002.safetensors": 4_972_489_328,
                                           "model-00002-of-00002.safetensors": 2_669_692_552,
                                           "config.json": 3_480, "tokenizer.model": 499_723},
    "seohyunqkr/MUsE": {"adapter_model.safetensors": 402_712_096, "adapter_config.json": 720},
}


def _get_muse_choice(window, settle) -> None:
    """The two ways of Get MUsE with their sizes, at 1366x768."""
    from muse_desktop.models.download import RemoteFile, RepoListing
    from muse_desktop.models.getmuse import Plan

    listings = [RepoListing(repo, "0" * 40, tuple(RemoteFile(name, size, None, None) for name, size in files.items()))
                for repo, files in REAL_SIZES.items()]
    plan = Plan(listings[0], listings[1], Path(os.environ["MUSE_HOME"]) / "models")
    plan.size()
    window.resize(1366, 768)
    window.show_model_page()
    window.model_page._show_ways(plan)
    settle()
    window._model_scroll.ensureWidgetVisible(window.model_page.ways)
    settle()
    shot(window, "get-muse-choice")
    window.model_page.ways.hide()
    window.show_chat()
    window.resize(1000, 800)
    settle()


def speak_button_states(window, settle) -> None:
    """The Speak button idle, listening (a recording played as the microphone) and writing down.

    The listening model is whisper.cpp's base.en shape with random weights, written here,
    so "writing down" lasts long enough to be seen; its words would be nonsense.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from muse_desktop.models.whisper_demo import BASE_EN, write_model
    from test_listen import write_wav

    from muse_desktop.speech import listen

    chat = window.chat
    model = listen.models_folder() / "ggml-base-random.bin"
    model.parent.mkdir(parents=True, exist_ok=True)
    write_model(model, BASE_EN)
    window.settings.listen_model = model.name
    chat.speech.source_factory = lambda: listen.WavFileSource(
        write_wav(Path(os.environ["MUSE_HOME"]) / "said.wav", seconds_loud=3.0), realtime=True)
    window.resize(1366, 768)
    window.pages.setCurrentWidget(chat)
    settle()
    shot(window, "speak-idle")
    chat.speech.speak_button.click()
    settle(lambda: chat.speech.meter.value() > 60)
    shot(window, "speak-listening")
    settle(lambda: chat.speech.state == "writing")
    time.sleep(0.3)
    settle()
    shot(window, "speak-writing-down")
    chat.speech.speak_button.click()  # "Cancel"
    settle(lambda: chat.speech.state == "idle")


def natural_voice_dialog(window, settle) -> None:
    """Speech ▸ Get the natural voice: the question with its size and licence, over the chat, at
    1366x768 and 1280x720 (run with QT_SCALE_FACTOR=2 for 200 %). The registry is one on
    127.0.0.1 serving wheels repacked (deflated) from the installed packages, so the size is
    close to, not exactly, PyPI's; the copy without Piper (the frozen bundle) is what the
    entry is for, so that is what is set here."""
    import zipfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pypi_server import FakePyPI, wheel_from_installed
    from PySide6.QtGui import QColor, QPainter, QPen
    from PySide6.QtWidgets import QMessageBox

    from muse_desktop.speech import voice, voice_runtime

    scale = "200" if os.environ.get("QT_SCALE_FACTOR") == "2" else "100"
    folder = Path(tempfile.mkdtemp(prefix="muse-wheels-"))
    registry = FakePyPI()
    for part in voice_runtime.RUNTIME + (voice_runtime.VOICE_PART,):
        registry.add(part.name, part.version, wheel_from_installed(part.name, folder, zipfile.ZIP_DEFLATED))
    voice.engine_missing_reason = lambda: "The natural reading voice is not on this computer yet."
    voice.find_voice = lambda *_a: None
    os.environ[voice_runtime.ENV_INDEX] = registry.endpoint
    chat = window.chat
    with registry:
        for width, height in ((1366, 768), (1280, 720)):
            shown = []

            def exec_(box, width=width, height=height, shown=shown):
                box.show()
                settle()
                shot = window.grab()
                painter = QPainter(shot)
                dialog = box.grab()
                outer, inner = shot.deviceIndependentSize(), dialog.deviceIndependentSize()
                left, top = int(outer.width() - inner.width()) // 2, int(outer.height() - inner.height()) // 2
                painter.drawPixmap(left, top, dialog)
                painter.setPen(QPen(QColor("#333333"), 3))  # offscreen windows have no frame: draw one
                painter.drawRect(left, top, int(inner.width()), int(inner.height()))
                painter.end()
                shot.save(str(OUT / f"natural-voice-dialog-{width}x{height}-{scale}.png"))
                box.hide()
                shown.append(True)
                return QMessageBox.No

            QMessageBox.exec = exec_
            window.resize(width, height)
            window.pages.setCurrentWidget(chat)
            settle()
            chat.speech.natural_action.trigger()
            settle(lambda shown=shown: bool(shown) and chat.speech.planning.worker is None)


def household(settle, model: str = "") -> None:
    """ "Who is using MUsE?" with Grandma, Leo and Sam, on the two laptop screens at 100 % and 200 %;
    then Grandma's chat with its "Answering:" line (with a model)."""
    from muse_desktop.chat.store import Store
    from muse_desktop.household import people
    from muse_desktop.household.settings import Settings, save_settings
    from muse_desktop.ui.app import MainWindow

    os.environ["MUSE_HOME"] = tempfile.mkdtemp(prefix="muse-shots-")
    store = Store()
    computer = Settings(model_path=model)
    for name, user_type in (("Grandma", "older-adult"), ("Leo", "child"), ("Sam", "nurse")):
        people.add_person(store, name, computer, user_type_id=user_type)
    save_settings(computer)
    window = MainWindow(computer, store=store)
    window.show()
    for zoom in (100, 200):
        while window.settings.zoom_percent < zoom:
            window.zoom(+1)
        for width, height in ((1366, 768), (1280, 720)):
            window.resize(width, height)
            settle()
            shot(window, f"household-{width}x{height}-{zoom}")
    window.zoom(0)
    if model:
        grandma = next(p for p in store.profiles() if p.name == "Grandma")
        window.people_page.tiles[grandma.id].click()
        settle(lambda: window.chat.engine is not None and window.chat.worker is None)
        window.resize(1366, 768)
        settle()
        shot(window, "chat-answering-line")
    window.close()


def open_window():
    """The real main window in a throwaway MUSE_HOME, and ``settle`` (run Qt until a condition holds)."""
    os.environ["MUSE_HOME"] = tempfile.mkdtemp(prefix="muse-shots-")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from PySide6.QtWidgets import QApplication

    from muse_desktop.household.settings import Settings
    from muse_desktop.chat.store import Store
    from muse_desktop.ui.app import MainWindow

    app = QApplication([])

    def settle(condition=lambda: True):
        while not condition():
            app.processEvents()
            time.sleep(0.01)
        for _ in range(5):
            app.processEvents()

    OUT.mkdir(exist_ok=True)
    window = MainWindow(Settings(user_type_id="older-adult"), store=Store())
    return app, window, settle


def shot(window, name: str) -> None:
    window.grab().save(str(OUT / f"{name}.png"))


def main() -> int:
    if sys.argv[1:2] == ["--household"]:
        _app, window, settle = open_window()
        window.close()
        household(settle, sys.argv[2] if len(sys.argv) > 2 else "")
        return 0
    if sys.argv[1:2] == ["--own-model"]:
        _app, window, settle = open_window()
        own_model_mid_run(window, settle)
        own_check_shots(window, settle)
        window.close()
        return 0
    if sys.argv[1:2] == ["--natural-voice"]:  # the one-click natural voice's question
        _app, window, settle = open_window()
        window.show()
        window.chat.set_user_type(window.page.current(), open_saved_model=False)
        natural_voice_dialog(window, settle)
        window.close()
        return 0
    if sys.argv[1:2] == ["--speech"]:  # only the Speak button's screenshots (no chat model needed)
        _app, window, settle = open_window()
        window.show()
        window.chat.set_user_type(window.page.current(), open_saved_model=False)
        speak_button_states(window, settle)
        window.close()
        return 0
    model = sys.argv[1]
    _app, window, settle = open_window()
    from muse_desktop.household.settings import Theme

    window.resize(1000, 800)
    window.show()
    settle()
    window.page.search.setText("nurse")
    settle()
    shot(window, "who-is-using")
    window.show_chat()  # no model yet: the model step of the first run
    settle()
    shot(window, "first-run-model")
    _get_muse_choice(window, settle)
    window.use_model(model)
    settle(lambda: window.chat.engine is not None and window.chat.worker is None)
    for question in ("Why is a balanced diet important?", "How much water should I drink?"):
        window.chat.input.setText(question)
        window.chat.send()
        settle(lambda: window.chat.worker is None)
    laptop(window, settle)
    if "--only-laptop" in sys.argv:
        window.close()
        return 0
    shot(window, "chat-default-zoom")
    window.contrast.setChecked(True)
    settle()
    shot(window, "chat-high-contrast")
    window.contrast.setChecked(False)
    for _ in range(4):
        window.zoom(+1)
    settle()
    shot(window, "chat-200-percent")
    window.zoom(0)
    window.set_theme(Theme.DARK)
    settle()
    shot(window, "chat-dark")
    window.set_theme(Theme.NORMAL)
    personalisation(window, settle)
    compare_results(window, settle, model)
    trainer_mid_run(window, settle)
    own_model_mid_run(window, settle)
    own_check_shots(window, settle)
    window.close()
    return 0


def laptop(window, settle) -> None:
    """The chat on a 1366×768 laptop: normal text, 200 %, high contrast, and keyboard focus on Send."""
    window.resize(1366, 768)
    settle()
    shot(window, "laptop-100-percent")
    for _ in range(4):
        window.zoom(+1)
    settle()
    shot(window, "laptop-200-percent")
    window.zoom(0)
    window.contrast.setChecked(True)
    settle()
    shot(window, "laptop-high-contrast")
    window.contrast.setChecked(False)
    window.activateWindow()
    window.chat.input.setText("What should I cook tonight?")
    window.chat.send_button.setFocus()
    settle()
    shot(window, "laptop-focus-on-send")
    window.chat.input.clear()
    laptop_compare(window, settle)
    window.resize(1000, 800)
    settle()


def laptop_compare(window, settle) -> None:
    """Compare at 200 % on 1366×768, rating one answer with the big 1–5 buttons (two stand-in answers)."""
    page = window.compare
    for _ in range(4):
        window.zoom(+1)
    window.tabs.setCurrentWidget(window._compare_scroll)
    page.rounds = [[{"id": 0, "answer": answer, "question": "Why do leaves fall in autumn?", "user_type": "Child"}
                    for answer in ("Trees let their leaves go to save water in the cold months.",
                                   "In autumn the days get short, so the tree rests and drops its leaves.")]]
    page.round_index = 0
    page.rating.show()
    page.show_round()
    settle()
    window._compare_scroll.verticalScrollBar().setValue(page.rating.y())  # the rating at the top
    page.score_boxes[0][1][0].buttons()[3].setFocus()
    settle()
    window.grab().save(str(OUT / "laptop-compare-200-percent.png"))
    page.rating.hide()
    window.tabs.setCurrentIndex(0)
    window.zoom(0)
    settle()


def personalisation(window, settle) -> None:
    """Preference mode with its four candidates, a kiosk refusal, and simple mode."""
    import itertools

    from muse_desktop.household.scope import train_scope_guard

    chat = window.chat
    window.resize(1000, 1000)
    chat.new_conversation()
    chat.preference_toggle.setChecked(True)
    chat.input.setText("Why do cats purr?")
    chat.send()
    settle(lambda: chat.worker is None and len(getattr(chat, "_candidates", [])) == 4)
    chat.preference_panel.choose(best=1, worst=2, reason="Short and kind")
    settle()
    shot(window, "preference-mode")
    chat.preference_panel.keep.click()
    chat.preference_toggle.setChecked(False)
    names = ["Tutankhamun", "Ramesses II", "Khufu", "Hatshepsut", "Akhenaten", "Cleopatra"]
    forms = ["Who was {}?", "When did {} rule Egypt?", "Where is the tomb of {}?", "What treasures belonged to {}?",
             "Which statue of {} is in this museum?", "How was {} mummified?", "What did {} build?",
             "Is the mask of {} in the Egyptian gallery?"]
    train_scope_guard([f.format(n) for f, n in itertools.product(forms, names)], topic="ancient Egypt").guard.save()
    window.settings.kiosk_mode = True
    chat.new_conversation()
    chat.input.setText("Who won the football match last night?")
    chat.send()
    settle(lambda: chat.worker is None)
    shot(window, "kiosk-refusal")
    window.settings.kiosk_mode = False
    window.resize(1000, 800)
    window.set_simple_mode(True)
    settle()
    shot(window, "simple-mode")
    window.set_simple_mode(False)
    locked(window, settle)


def locked(window, settle) -> None:
    """Locked by the caregiver: the locked person's chat, the banner, no Trainer or Compare tab."""
    window.resize(1366, 768)
    window.set_pin("2468")
    window.lock_now()
    settle()
    shot(window, "locked")
    window.unlock("2468")
    settle()


def compare_results(window, settle, model: str) -> None:
    """A blind comparison of the demo model and its Q8_0 version, rated by a script, to the chart."""
    from converters.quantize import quantize

    q8 = Path(os.environ["MUSE_HOME"]) / "demo-q8.gguf"
    list(quantize(model, q8, "Q8_0"))
    page = window.compare
    window.resize(1000, 1400)
    window.tabs.setCurrentWidget(window._compare_scroll)
    page.models.clear()
    page._add("Demo F16", model, checked=True)
    page._add("Demo Q8_0", str(q8), checked=True)
    page.questions.setPlainText("Why is the sky blue?\nWhat do bees make?\nHow does rain form?")
    page.user_types.setText("Child, Elderly, Psychologist")
    page.rater.setText("Screenshot rater")
    page.prepare()
    settle(lambda: page.worker is None and page.rating.isVisible())
    shot(window, "compare-rating")
    for n in range(len(page.rounds)):
        page.rate_current([(3 + n % 3, 2 + n % 4, 4), (2 + n % 2, 3, 1 + n % 5)], best=n % 2)
        page.save_round()
    settle()
    page.chart.parentWidget().parentWidget()  # the results group
    shot(window, "compare-results")
    window.tabs.setCurrentIndex(0)


def trainer_mid_run(window, settle) -> None:
    """The Trainer tab with a real run on the tiny demo checkpoint, captured mid-run."""
    import json

    from muse_desktop.models.demo_model import build_demo_model

    work = Path(os.environ["MUSE_HOME"])
    base = build_demo_model(work / "tiny-base")
    data = work / "my-examples.jsonl"
    rows = [("Child", "What colour is the sky?", "Blue, like a big blue blanket."),
            ("Elderly", "How do I call my grandson?", "Press the green phone button, then his name."),
            ("Farmer", "When should I plant potatoes?", "In spring, once the soil is warm."),
            ("Nurse", "What is a normal pulse?", "Sixty to one hundred beats a minute."),
            ("Child", "Why do cats purr?", "They purr when they feel safe and happy."),
            ("Teenager", "How can I sleep better?", "Put the phone away an hour before bed.")]
    data.write_text("".join(json.dumps({"user_type": u, "question": q, "answer": a}) + "\n" for u, q, a in rows)
                    + '{"user_type": "Child", "question": "broken line"\n')
    window.resize(1000, 1500)
    window.tabs.setCurrentIndex(1)
    page = window.trainer
    page.base_model.setText(str(base))
    page.dataset.setText(str(data))
    page.check_data()
    settle(lambda: page.worker is None)
    page.options["max_steps"].setValue(400)
    page.options["batch_size"].setValue(2)
    page.options["lora_r"].setValue(8)
    page.options["lora_alpha"].setValue(16)
    page.options["learning_rate"].setText("5e-3")
    page.options["save_steps"].setValue(20)
    page.start()
    settle(lambda: len(page.chart.series["train_loss"]) >= 150 and len(page.chart.series["val_loss"]) >= 1)
    shot(window, "trainer-mid-run")
    page.cancel()
    settle(lambda: page.worker is None)


OWN_CHECK_ASKED = ["How do I call my son on the phone?", "What is a good soup for a cold winter day?",
                   "Why do the leaves fall in autumn?", "Is tea good for me?"]


def own_check_shots(window, settle) -> None:
    """The person's own blind check: one question with three answers A, B, C (Rose's new add-on, Sam's and
    MUsE without an add-on, in a random order), at 1366x768 and 1280x720, 100 % and 200 %, and the result.

    The add-ons are random LoRAs on the tiny demo model, converted to GGUF like a trained one.
    """
    import copy

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import make_peft_adapter

    from converters.convert import convert_adapter, convert_model
    from muse_desktop.household import people
    from muse_desktop.models.demo_model import build_demo_model
    from muse_desktop.ui.own_check import OwnCheckWindow

    work = Path(os.environ["MUSE_HOME"]) / "own-check"
    base = build_demo_model(work / "tiny-base")
    model = work / "tiny-base-f32.gguf"
    list(convert_model(base, model, "f32"))
    files = {}
    for name, seed in (("rose", 0), ("sam", 1)):
        files[name] = work / f"{name}-lora.gguf"
        list(convert_adapter(make_peft_adapter(base, work / f"{name}-peft", seed=seed, b_scale=1.0), files[name], base))
    store = window.store
    settings = copy.deepcopy(window.settings)
    settings.model_path, settings.adapter_path = str(model), ""
    rose = next((p for p in store.profiles() if p.name == "Rose"), None) or people.add_person(
        store, "Rose", settings, user_type_id="older-adult")  # the own-model shot may have made her
    candidates = [{"text": t, "framing": "muse", "temperature": 1.0} for t in ("one", "two", "three", "four")]
    for question in OWN_CHECK_ASKED:
        store.add_preference("Elderly", [], question, candidates, best=0, worst=1, profile_id=rose.id)
    sam = people.add_person(store, "Sam", settings, user_type_id="child")
    people.attach_adapter(store, sam.id, files["sam"])
    before = window.settings.zoom_percent
    dialog = None
    for (width, height), zoom in [((1366, 768), 100), ((1366, 768), 200), ((1280, 720), 200), ((1280, 720), 100)]:
        window.settings.zoom_percent = settings.zoom_percent = zoom
        window.apply_look()
        dialog = OwnCheckWindow(window, settings, store, rose.id, str(files["rose"]), seed=5, max_tokens=48)
        dialog.resize(width, height)
        dialog.show()
        settle(lambda d=dialog: d.pages.currentWidget() is d.asking)
        dialog.choose(1)  # a pick made: "Next question" is on
        settle()
        dialog.grab().save(str(OUT / f"own-check-{width}x{height}-{zoom}-percent.png"))
        if (width, zoom) != (1280, 100):  # the last one goes on to the end
            dialog.done(0)
    for _ in range(3):  # the last one to the end: the counts and the decision
        dialog.next_round()
        dialog.choose(2)
    dialog.next_round()
    settle()
    dialog.grab().save(str(OUT / "own-check-result-1280x720.png"))
    dialog.done(0)
    window.settings.zoom_percent = before
    window.apply_look()


def own_model_mid_run(window, settle) -> None:
    """"Make a model that answers the way I like" mid-run on the demo model, for a person with eight chosen
    answers: 1366x768 and 1280x720, at 100 % and 200 %."""
    from muse_desktop.household import people
    from muse_desktop.household.settings import Settings, Theme
    from muse_desktop.models.demo_model import ensure_demo_gguf
    from muse_desktop.ui.own_model import OwnModelWindow
    from muse_desktop.ui.theme import stylesheet

    work = Path(os.environ["MUSE_HOME"])
    model = [e for e in ensure_demo_gguf(work / "own-demo")][-1].path  # the demo layout: its checkpoint beside it
    store = window.store
    rose = next((p for p in store.profiles() if p.name == "Rose"), None) or people.add_person(
        store, "Rose", Settings(), user_type_id="older-adult")
    answers = [("How do I call my son?", "Press the green button twice."),
               ("What is the weather today?", "Look out of the kitchen window."),
               ("When is my doctor visit?", "Tuesday at ten."), ("Where are my glasses?", "On your head."),
               ("How do I make tea?", "Kettle first, then the cup."), ("Who won the match?", "Nobody, it rained."),
               ("What can I cook tonight?", "Soup with bread."), ("Which bus goes to town?", "The number nine.")]
    for question, best in answers:
        candidates = [{"text": t, "framing": "muse", "temperature": 1.0}
                      for t in ("I cannot help with that.", best, "Maybe.", "Ask someone else.")]
        store.add_preference("Elderly", [], question, candidates, best=1, worst=0, profile_id=rose.id)
    dialog = OwnModelWindow(store, Settings(model_path=model), rose.id, runs_root=work / "own-runs",
                            models_dir=work / "own-models",
                            training_settings={"max_steps": 150, "learning_rate": 5e-3, "save_steps": 0})
    dialog.setStyleSheet(stylesheet(Theme.NORMAL, 100))
    dialog.resize(1366, 768)
    dialog.show()
    dialog.start()
    settle(lambda: len(dialog.chart.series["train_loss"]) >= 60)
    for zoom in (100, 200):
        dialog.setStyleSheet(stylesheet(Theme.NORMAL, zoom))
        for width, height in ((1366, 768), (1280, 720)):
            dialog.resize(width, height)
            settle()
            dialog.grab().save(str(OUT / f"own-model-mid-run-{width}x{height}-{zoom}.png"))
    dialog.stop()
    settle(lambda: dialog.worker is None)
    dialog.close()


if __name__ == "__main__":
    sys.exit(main())
