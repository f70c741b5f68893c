"""Events yielded by long work (conversion, quantization, training, downloads).

Long work is a plain generator of these small dataclasses that checks a
:class:`CancelToken` between steps. The CLI prints them; the Qt layer runs the
generator on a worker thread and re-emits them as signals; a child process
writes them as JSON lines.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass
class Progress:
    done: float
    total: float
    unit: str = ""  # "tensors", "bytes", "steps", ...
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(max(self.done / self.total, 0.0), 1.0)


@dataclass
class Text:
    """A piece of streamed answer text (always whole characters)."""

    delta: str


@dataclass
class CandidateText:
    """A piece of one of several answers written together (``index`` says which)."""

    index: int
    delta: str


@dataclass
class Log:
    message: str
    level: str = "info"  # info, warning


@dataclass
class Metric:
    name: str
    value: float
    step: int = 0


@dataclass
class Done:
    message: str
    path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Error:
    message: str
    kind: str = "error"  # error, cancelled, out-of-memory, ...


Event = Union[Progress, Text, CandidateText, Log, Metric, Done, Error]
_KINDS = {cls.__name__.lower(): cls for cls in (Progress, Text, CandidateText, Log, Metric, Done, Error)}


def to_json(event: Event) -> str:
    """One JSON line for ``event``."""
    return json.dumps({"event": type(event).__name__.lower(), **dataclasses.asdict(event)}, ensure_ascii=False)


def from_json(line: str) -> Event:
    data = json.loads(line)
    cls = _KINDS[data.pop("event")]
    return cls(**data)


class Cancelled(Exception):
    """Raised inside long work when its cancel token is set."""


class CancelToken:
    """Set from any thread; long work checks it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled")
