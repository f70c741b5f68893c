"""Run the core's event generators on a worker thread and re-emit their events as Qt signals.

Two objects: a runner that lives on the worker thread and consumes the generator,
and the :class:`EventWorker` that stays on the GUI thread. The runner's signals are
connected to the worker's, so Qt queues them across threads and every slot — even
a plain lambda, which has no thread of its own — runs on the GUI thread, where
widgets may be touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal

from muse_desktop.base.errors import MuseError
from muse_desktop.base.events import CancelToken, CandidateText, Cancelled, Done, Event, Log, Metric, Progress, Text


class _Signals(QObject):
    text = Signal(str)
    candidate_text = Signal(int, str)  # index, delta
    log = Signal(str, str)
    progress = Signal(float, float, str, str)  # done, total, unit, message
    metric = Signal(str, float, int)  # name, value, step
    done = Signal(object)  # the Done event
    failed = Signal(str)
    finished = Signal()


class _Runner(_Signals):
    def __init__(self, make_events: Callable[[CancelToken], Iterator[Event]], token: CancelToken):
        super().__init__()
        self.make_events = make_events
        self.token = token

    def run(self) -> None:
        try:
            for event in self.make_events(self.token):
                if isinstance(event, Text):
                    self.text.emit(event.delta)
                elif isinstance(event, CandidateText):
                    self.candidate_text.emit(event.index, event.delta)
                elif isinstance(event, Progress):
                    self.progress.emit(float(event.done), float(event.total), event.unit, event.message)
                elif isinstance(event, Metric):
                    self.metric.emit(event.name, float(event.value), int(event.step))
                elif isinstance(event, Log):
                    self.log.emit(event.message, event.level)
                elif isinstance(event, Done):
                    self.done.emit(event)
        except Cancelled:
            self.failed.emit("Stopped.")
        except MuseError as exc:  # every error the app raises on purpose: its words, then its advice
            self.failed.emit(exc.for_person())
        except Exception as exc:  # a fault in the app: shown as it is, and the app stays up
            self.failed.emit(str(exc) or type(exc).__name__)
        finally:
            self.finished.emit()


class EventWorker(_Signals):
    """Consumes one generator on its own thread; its signals arrive on the GUI thread.

    ``cancel()`` is safe from the GUI thread.
    """

    def __init__(self, make_events: Callable[[CancelToken], Iterator[Event]]):
        super().__init__()
        self.token = CancelToken()
        self.thread = QThread()
        self.runner = _Runner(make_events, self.token)
        self.runner.moveToThread(self.thread)
        self.thread.started.connect(self.runner.run)
        # quit() is thread-safe: called directly, so the thread has stopped its loop by the
        # time the GUI thread sees ``finished`` and waits for it.
        self.runner.finished.connect(self.thread.quit, Qt.DirectConnection)
        for name in ("text", "candidate_text", "log", "progress", "metric", "done", "failed", "finished"):
            getattr(self.runner, name).connect(getattr(self, name))

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        self.token.cancel()

    def deleteLater(self) -> None:  # noqa: N802 (Qt's name)
        self.runner.deleteLater()
        super().deleteLater()

    def dispose(self) -> None:
        """After ``finished``: wait for the thread, then let Qt delete everything on its own thread.

        Leaving them to Python's garbage collector at exit has crashed the interpreter.
        """
        self.thread.wait()
        self.deleteLater()
        self.thread.deleteLater()


def start_worker(owner: Any, make_events: Callable[[CancelToken], Iterator[Event]],
                 finished: Callable[[], None], **slots: Callable) -> EventWorker:
    """Run ``make_events`` on a new worker held in ``owner.worker`` while it runs.

    ``slots`` connect the worker's signals by name (``done=…``, ``failed=…``,
    ``progress=…``). When the work ends, ``owner.worker`` is cleared and the worker
    disposed; then ``finished`` runs (on the GUI thread, like every slot).
    """
    worker = EventWorker(make_events)
    owner.worker = worker
    for name, slot in slots.items():
        getattr(worker, name).connect(slot)

    def end() -> None:
        owner.worker = None
        worker.dispose()
        finished()

    worker.finished.connect(end)
    worker.start()
    return worker
