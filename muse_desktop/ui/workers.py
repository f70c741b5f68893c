"""Run the core's event generators on a worker thread and re-emit their events as Qt signals."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from PySide6.QtCore import QObject, QThread, Signal

from muse_desktop.events import CancelToken, Cancelled, Done, Event, Log, Progress, Text


class EventWorker(QObject):
    """Consumes one generator on its own thread; ``cancel()`` is safe from the GUI thread."""

    text = Signal(str)
    log = Signal(str, str)
    progress = Signal(float, float, str, str)  # done, total, unit, message
    done = Signal(object)  # the Done event
    failed = Signal(str)
    finished = Signal()

    def __init__(self, make_events: Callable[[CancelToken], Iterator[Event]]):
        super().__init__()
        self.make_events = make_events
        self.token = CancelToken()
        self.thread = QThread()
        self.moveToThread(self.thread)
        self.thread.started.connect(self.run)
        self.finished.connect(self.thread.quit)

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.token.cancel()

    def run(self) -> None:
        try:
            for event in self.make_events(self.token):
                if isinstance(event, Text):
                    self.text.emit(event.delta)
                elif isinstance(event, Progress):
                    self.progress.emit(float(event.done), float(event.total), event.unit, event.message)
                elif isinstance(event, Log):
                    self.log.emit(event.message, event.level)
                elif isinstance(event, Done):
                    self.done.emit(event)
        except Cancelled:
            self.failed.emit("Stopped.")
        except Exception as exc:  # shown to the person; the app stays up
            self.failed.emit(str(exc) or type(exc).__name__)
        finally:
            self.finished.emit()
