"""Start the real app for an AT-SPI test (run as a script with MUSE_HOME prepared by the test).

With MUSE_ATSPI_LABELS set, it writes there, every half second, the words every shown
button, tab and menu item has on screen, and the words of every label that names a field:
what the test holds the names a screen reader hears against.
"""

from __future__ import annotations

import json
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QTabBar

from muse_desktop import APP_NAME
from muse_desktop.ui.app import run_app


def field_labels() -> list[str]:
    """The words of shown labels that name a field (a label with a buddy), as the field's name should be."""
    words = []
    for top in QApplication.topLevelWidgets():
        for label in top.findChildren(QLabel):
            if label.isVisible() and label.buddy() is not None and label.text():
                words.append(label.text().replace("&", "").rstrip(":").strip())
    return sorted(set(words))


def visible_words() -> list[str]:
    """The labels painted on shown buttons, tabs and menu items (mnemonic ampersands removed)."""
    words = []
    for top in QApplication.topLevelWidgets():
        for button in top.findChildren(QAbstractButton):
            if button.isVisible() and button.text():
                words.append(button.text().replace("&", ""))
        for bar in top.findChildren(QTabBar):
            words.extend(bar.tabText(i).replace("&", "") for i in range(bar.count()) if bar.isTabVisible(i))
        for action in top.findChildren(QAction):
            if action.text():
                words.append(action.text().replace("&", ""))
    return sorted(set(words))


SEEN: set[str] = set()  # every page the test walks passes by: what was on screen at any time
FIELDS: set[str] = set()


def dump(path: str) -> None:
    try:
        SEEN.update(visible_words())
        FIELDS.update(field_labels())
        with open(path + ".part", "w") as out:
            json.dump({"words": sorted(SEEN), "fields": sorted(FIELDS)}, out)
        os.replace(path + ".part", path)
    except Exception:  # noqa: BLE001 (a widget deleted while listed: the next round gets it)
        pass


if __name__ == "__main__":
    QApplication.setApplicationName(APP_NAME)  # before the app exists: the name AT-SPI registers
    app = QApplication(sys.argv[:1])
    QTimer.singleShot(180_000, app.quit)  # never outlive a stuck test
    if os.environ.get("MUSE_ATSPI_GREEDY"):
        # Answers written greedily, so the random test model's answer is the same (and as long) every run:
        # the streaming test needs one longer than its bound. Everything else is the real app.
        from muse_desktop.chat import engine as chat_engine

        sampled = chat_engine.default_sampling

        def greedy(prompt_name):
            sampling = sampled(prompt_name)
            sampling.temperature = 0.0
            return sampling

        chat_engine.default_sampling = greedy
    labels = os.environ.get("MUSE_ATSPI_LABELS")
    if labels:
        timer = QTimer()
        timer.timeout.connect(lambda: dump(labels))
        timer.start(500)
    sys.exit(run_app(sys.argv[:1]))
