"""The Trainer's status changes that matter (started, stopping, finished, failed) reach screen readers."""

from __future__ import annotations

from muse_desktop.base.events import Done
from muse_desktop.household.settings import Settings
from muse_desktop.ui import widgets
from muse_desktop.ui.app import MainWindow


def test_a_failed_or_finished_training_is_announced(qtbot, monkeypatch):
    told = []
    real = widgets.announce

    def recording(widget, message, assertive=False):
        told.append((message, assertive))
        return real(widget, message, assertive)

    monkeypatch.setattr(widgets, "announce", recording)
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    page = win.trainer

    def fails(_token):
        yield from ()
        raise RuntimeError("The computer ran out of memory. A checkpoint was kept.")

    page._run(fails, on_done=lambda _event: None)
    qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
    assert ("The computer ran out of memory. A checkpoint was kept.", True) in told, told  # assertive: it failed
    assert "ran out of memory" in page.status.text()

    def finishes(_token):
        yield Done("Training finished: the loss went from 2.1 to 0.4.")

    page._run(finishes, on_done=page._trained)
    qtbot.waitUntil(lambda: page.worker is None, timeout=10000)
    assert ("Training finished: the loss went from 2.1 to 0.4.", False) in told, told
    win.close()
