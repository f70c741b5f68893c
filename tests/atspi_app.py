"""Start the real app for an AT-SPI test (run as a script with MUSE_HOME prepared by the test)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from muse_desktop import APP_NAME
from muse_desktop.ui.app import run_app

if __name__ == "__main__":
    QApplication.setApplicationName(APP_NAME)  # before the app exists: the name AT-SPI registers
    app = QApplication(sys.argv[:1])
    QTimer.singleShot(180_000, app.quit)  # never outlive a stuck test
    sys.exit(run_app(sys.argv[:1]))
