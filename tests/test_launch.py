"""A returning person's model opens while the first page shows, with their instruction already cached."""

from __future__ import annotations

from muse_desktop.models.demo_model import Variant
from muse_desktop.household.settings import Settings
from muse_desktop.ui.app import MainWindow


def test_the_saved_model_opens_at_launch_with_the_instruction_in_its_cache(qtbot, tiny_gguf, monkeypatch):
    from muse_desktop.chat import engine as engine_module

    opened = []
    real_init = engine_module.ChatEngine.__init__

    def counting_init(self, *args, **kwargs):
        opened.append(args[0])
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.ChatEngine, "__init__", counting_init)
    path = str(tiny_gguf[Variant.MINI_4K])
    win = MainWindow(Settings(user_type_id="older-adult", model_path=path))
    qtbot.addWidget(win)
    win.show()
    assert win.pages.currentIndex() == 0  # the first page shows; nothing was pressed
    qtbot.waitUntil(lambda: win.chat.engine is not None and win.chat.worker is None, timeout=30000)
    engine = win.chat.engine
    user_type = win.page.current()
    prefix = engine.instruction_prefix(user_type.prompt_name)
    assert engine.llm.n_tokens == len(prefix) > 10  # the instruction is in the cache before any question
    assert list(engine.llm.input_ids[:len(prefix)]) == prefix
    win.show_chat()  # "Start talking": the model is not opened a second time
    assert win.chat.engine is engine and opened == [path]
    win.chat.input.setText("Why is a balanced diet important?")
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.send_button.click()
    turns = win.store.turns(win.chat.conversation_id)
    assert turns[-1].role == "assistant" and turns[-1].content
    win.close()

