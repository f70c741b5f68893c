"""Start the real app for an AT-SPI test (run as a script with MUSE_HOME prepared by the test).

With MUSE_ATSPI_LABELS set, it writes there, every half second, the words every shown
button, tab and menu item has on screen: what the test holds the names a screen reader
hears against.
"""

from __future__ import annotations

import json
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractButton, QApplication, QTabBar

from muse_desktop import APP_NAME
from muse_desktop.ui.app import run_app


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


def dump(path: str) -> None:
    try:
        SEEN.update(visible_words())
        with open(path + ".part", "w") as out:
            json.dump(sorted(SEEN), out)
        os.replace(path + ".part", path)
    except Exception:  # noqa: BLE001 (a widget deleted while listed: the next round gets it)
        pass


if __name__ == "__main__":
    QApplication.setApplicationName(APP_NAME)  # before the app exists: the name AT-SPI registers
    app = QApplication(sys.argv[:1])
    QTimer.singleShot(180_000, app.quit)  # never outlive a stuck test
    labels = os.environ.get("MUSE_ATSPI_LABELS")
    if labels:
        timer = QTimer()
        timer.timeout.connect(lambda: dump(labels))
        timer.start(500)
    sys.exit(run_app(sys.argv[:1]))
