#!/usr/bin/env python3
"""Render the real windows offscreen and save the screenshots in docs/screenshots/.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshots.py MODEL.gguf

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


def main() -> int:
    model = sys.argv[1]
    os.environ["MUSE_HOME"] = tempfile.mkdtemp(prefix="muse-shots-")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from PySide6.QtWidgets import QApplication

    from muse_desktop.settings import Settings, Theme
    from muse_desktop.store import Store
    from muse_desktop.ui.app import MainWindow

    app = QApplication([])

    def settle(condition=lambda: True):
        while not condition():
            app.processEvents()
            time.sleep(0.01)
        for _ in range(5):
            app.processEvents()

    window = MainWindow(Settings(user_type_id="older-adult"), store=Store())
    window.resize(1000, 800)
    window.show()
    settle()
    window.page.search.setText("nurse")
    settle()
    OUT.mkdir(exist_ok=True)
    window.grab().save(str(OUT / "who-is-using.png"))
    window.show_chat()  # no model yet: the model step of the first run
    settle()
    window.grab().save(str(OUT / "first-run-model.png"))
    window.use_model(model)
    settle(lambda: window.chat.engine is not None and window.chat.worker is None)
    for question in ("Why is a balanced diet important?", "How much water should I drink?"):
        window.chat.input.setText(question)
        window.chat.send()
        settle(lambda: window.chat.worker is None)
    window.grab().save(str(OUT / "chat-default-zoom.png"))
    window.contrast.setChecked(True)
    settle()
    window.grab().save(str(OUT / "chat-high-contrast.png"))
    window.contrast.setChecked(False)
    for _ in range(4):
        window.zoom(+1)
    settle()
    window.grab().save(str(OUT / "chat-200-percent.png"))
    window.zoom(0)
    window.set_theme(Theme.DARK)
    settle()
    window.grab().save(str(OUT / "chat-dark.png"))
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
