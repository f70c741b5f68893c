"""``muse-desktop --self-test [MODEL.gguf]``: prove an install (or a frozen bundle) works, headless.

Checks, each reported on one line as OK or FAIL with the reason: the shipped
resources; the database (write, reopen, read back, integrity check, in a throwaway
folder); a model (the one given, or the demo model built on the spot) answering one
question through llama.cpp; llama.cpp's quantizer in its own child process (the
path a frozen bundle must get right); and what the install contains (whether torch
is there). Exit status 0 when every check passed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _check(name: str, fn: Callable[[], str], lines: list[str]) -> bool:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # every failure is a line of the report, never a traceback
        lines.append(f"FAIL {name}: {type(exc).__name__}: {exc}")
        return False
    lines.append(f"OK   {name}: {detail} ({time.perf_counter() - start:.1f} s)")
    return True


def run_self_test(model: str | None = None, out=None) -> int:
    from muse_desktop import APP_NAME, __version__

    work = Path(tempfile.mkdtemp(prefix="muse-self-test-"))
    lines = [f"{APP_NAME} {__version__} self-test ({'frozen bundle' if getattr(sys, 'frozen', False) else 'Python'}"
             f", Python {sys.version.split()[0]})"]
    state: dict = {}

    def resources() -> str:
        from muse_desktop.base.paths import resources_dir
        from muse_desktop.chat.usertypes import load_catalog

        catalog = load_catalog()
        presets = sorted(p.stem for p in (resources_dir() / "presets").glob("*.yaml"))
        if len(catalog) < 400 or len(presets) < 4:
            raise RuntimeError(f"only {len(catalog)} user types and {len(presets)} presets in {resources_dir()}")
        return f"{len(catalog)} user types, presets {', '.join(presets)}"

    def database() -> str:
        from muse_desktop.chat.store import Store

        path = work / "self-test.sqlite3"
        store = Store(path)
        conversation = store.create_conversation("Elderly", "Self-test")
        store.add_message(conversation.id, "user", "Hello")
        store.close()
        store = Store(path)
        try:
            messages = store.messages(conversation.id)
            verdict = store.integrity()
        finally:
            store.close()
        if [m.content for m in messages] != ["Hello"] or verdict != "ok":
            raise RuntimeError(f"read back {messages!r}, integrity {verdict}")
        return "written, reopened, read back, integrity ok"

    def chat() -> str:
        from muse_desktop.chat.engine import ChatEngine, EngineSettings, Sampling
        from muse_desktop.base.events import Done
        from muse_desktop.base.prompting import Turn

        path = model
        if path is None:
            from muse_desktop.models.demo_model import ensure_demo_gguf

            path = [e for e in ensure_demo_gguf(work / "demo") if isinstance(e, Done)][-1].path
        state["model"] = path
        engine = ChatEngine(path, EngineSettings(threads=2, context_length=512))
        try:
            done = list(engine.generate("Elderly", [Turn("user", "Why is a balanced diet important?")], None,
                                        Sampling(temperature=0.0, max_new_tokens=8)))[-1]
        finally:
            engine.close()
        if not isinstance(done, Done) or not done.data["token_ids"]:
            raise RuntimeError("no answer")
        return f"{Path(path).name} answered {len(done.data['token_ids'])} tokens"

    def quantizer() -> str:
        from converters.quantize import quantize

        if "model" not in state:
            raise RuntimeError("no model to quantize (the chat check failed)")
        out = work / "q8.gguf"
        list(quantize(state["model"], out, "Q8_0", threads=2))
        return f"Q8_0 written by a child process ({out.stat().st_size / 2**20:.1f} MiB)"

    def trainer() -> str:
        import json

        from muse_desktop.models.demo_model import build_demo_model
        from muse_desktop.base.events import Done
        from muse_desktop.training.child import run_training
        from muse_desktop.training.config import config_from_dict
        from muse_desktop.training.runfolder import RunFolder

        base = build_demo_model(work / "tiny-base")
        data = work / "examples.jsonl"
        data.write_text("".join(json.dumps({"user_type": "Child", "question": f"Question {i}?",
                                            "answer": f"Answer number {i}."}) + "\n" for i in range(4)))
        config = config_from_dict({"preset": "muse-3", "base_model": str(base), "dataset": str(data), "lora_r": 4,
                                   "lora_alpha": 8, "max_steps": 3, "batch_size": 2, "validation_split": 0,
                                   "eval_questions": 0})
        done = [e for e in run_training(config, work / "run") if isinstance(e, Done)]
        if not done or not RunFolder(work / "run").finished():
            raise RuntimeError("the training child process saved no adapter")
        return "3 LoRA steps in a child process, adapter saved"

    def speech_input() -> str:
        import numpy as np

        from muse_desktop.speech.listen import Recognizer
        from muse_desktop.models.whisper_demo import write_model

        model = write_model(work / "whisper-random.bin")
        text = Recognizer(model, threads=2).transcribe(np.zeros(16000, np.float32), max_tokens=3)
        if not text.startswith("hello"):
            raise RuntimeError(f"whisper.cpp wrote {text!r}, not the model's one word")
        return f"whisper.cpp wrote down {text.split()[0]!r} with a random-weight model"

    def natural_voice() -> str:
        from muse_desktop.speech import voice, voice_runtime

        model = voice.find_voice(voice.PACKAGED_VOICE, voice.voices_folder())
        if model is None:
            raise RuntimeError("Piper is here, but the voice Joe is not")
        spoken = voice.NaturalVoice(model)
        audio = spoken.synthesize("This is the natural voice.")
        seconds = len(audio) / spoken.sample_rate
        if seconds < 0.5 or float(abs(audio).max()) < 0.05:
            raise RuntimeError(f"Piper made {seconds:.2f} s of near silence")
        import piper

        runtime = voice_runtime.runtime_folder()
        if runtime is not None and Path(piper.__file__).is_relative_to(runtime):
            # The wheels it was made from must fit this interpreter's tags, as the download chose them.
            tags = set(voice_runtime.supported_tags())
            unfit = [w for w in voice_runtime.installed_wheels(runtime)
                     if not tags.intersection(voice_runtime.wheel_tags(w))]
            if unfit:
                raise RuntimeError(f"the downloaded runtime has wheels made for another computer: {unfit}")
            where = "the downloaded runtime"
        else:
            where = "the installed package"
        return f"Piper read a sentence ({seconds:.1f} s at {spoken.sample_rate} Hz) from {where}"

    def contents() -> str:
        heavy = [name for name in ("torch", "transformers", "peft") if importlib.util.find_spec(name) is not None]
        return "training stack present: " + ", ".join(heavy) if heavy else "chat only: no torch, transformers or peft"

    checks = [("resources", resources), ("database", database), ("chat", chat), ("quantizer", quantizer)]
    if importlib.util.find_spec("torch") is not None:  # MUsE Studio, or a development install
        checks.append(("trainer", trainer))
    if importlib.util.find_spec("pywhispercpp") is not None:  # speech input, in the bundles and the [speech] extra
        checks.append(("speech input", speech_input))
    from muse_desktop.speech import voice

    if voice.engine_missing_reason() is None:  # the [speech] extra, or the bundle's one-click download
        checks.append(("natural voice", natural_voice))
    checks.append(("contents", contents))
    try:
        ok = all([_check(name, fn, lines) for name, fn in checks])
    finally:
        # A demo model, a quantized copy and a training run: nothing of it may stay behind.
        shutil.rmtree(work, ignore_errors=True)
    lines.append("PASSED" if ok else "FAILED")
    print("\n".join(lines), file=out or sys.stdout, flush=True)
    return 0 if ok else 1
