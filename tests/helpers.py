"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The kiosk tests' topic: questions a museum of ancient Egypt is asked.
PHARAOHS = ["Tutankhamun", "Ramesses II", "Khufu", "Hatshepsut", "Akhenaten", "Cleopatra"]
FORMS = ["Who was {}?", "When did {} rule Egypt?", "Where is the tomb of {}?", "What treasures belonged to {}?",
         "Which statue of {} is in this museum?", "How was {} mummified?", "What did {} build along the Nile?",
         "Is the mask of {} in the Egyptian gallery?", "Why is {} famous among the pharaohs?",
         "What hieroglyphs mention {}?"]


def last_logits(chat, ids):
    """The logits an engine's own llama.cpp context gives the last of ``ids``, evaluated from an empty cache."""
    import llama_cpp
    import numpy as np

    chat.llm.reset()
    chat.llm.eval(ids)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(chat.llm.ctx, -1),
                                 shape=(chat.llm.n_vocab(),)).astype(np.float64).copy()


def museum_questions() -> list[str]:
    return [form.format(name) for form, name in itertools.product(FORMS, PHARAOHS)]


# --- the real main window (Qt is imported only when these run) -----------------------------


def wait_for_model(qtbot, win, action, timeout: int = 30000) -> None:
    """Run ``action`` (which opens or reopens a model) and wait until it is loaded and the worker gone."""
    with qtbot.waitSignal(win.chat.model_ready, timeout=timeout):
        action()
    qtbot.waitUntil(lambda: win.chat.worker is None)


def load_model_and_wait(qtbot, win, path) -> None:
    """Open ``path`` on the chat page and wait until the model is loaded and the worker gone."""
    wait_for_model(qtbot, win, lambda: win.use_model(str(path)))


def answer_and_wait(qtbot, win, action) -> None:
    """Run ``action`` (which asks something) and wait for the whole answer."""
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        action()
    qtbot.waitUntil(lambda: win.chat.worker is None)


def window_with_model(qtbot, settings, model, store=None, show_chat: bool = True):
    """The main window, shown, with ``model`` loaded and ready to answer."""
    from muse_desktop.ui.app import MainWindow

    win = MainWindow(settings, store=store)
    qtbot.addWidget(win)
    win.show()
    if show_chat:
        win.show_chat()
    load_model_and_wait(qtbot, win, model)
    return win


def make_peft_adapter(base_dir: Path, out_dir: Path, seed: int = 0, b_scale: float = 3.0, **lora_kwargs) -> Path:
    """A real PEFT LoRA adapter on the tiny model with non-zero B, saved as safetensors.

    With the default ``b_scale`` each module's delta is as large as its weight, so any
    slip in a merge shows; a smaller one gives the size of change a trained LoRA makes.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    options = {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
        "init_lora_weights": False,  # random A and B: a merge that drops B shows up
    }
    options.update(lora_kwargs)
    peft_model = get_peft_model(model, LoraConfig(**options))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(b_scale)  # make the delta large enough to matter in the logits
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir
