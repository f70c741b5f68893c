"""The one error family: work the app refuses or cannot finish, told to the person.

Every error the app raises on purpose is a :class:`MuseError`. Its message is written
for the person using the app (what happened, in plain words), ``advice`` says what to
do about it when the message does not already, and ``kind`` names the failure for code
that reacts to it (error, cancelled, out-of-memory, nan, crashed). The command line and
the window each catch the base once and show :meth:`MuseError.for_person`; nothing
above them needs to know the subclasses.

Each subclass also derives from the builtin it always was (``ValueError`` for input
that cannot be used, ``RuntimeError`` for work that could not be done), so code that
catches those keeps working.

Ground floor: imports nothing of the app.
"""

from __future__ import annotations


class MuseError(Exception):
    """Work that cannot go on; ``str(error)`` is the message for the person."""

    exit_code = 1  # what the command line returns when this ends a command

    def __init__(self, message: str = "", *, advice: str = "", kind: str = "error"):
        super().__init__(message)
        self.advice = advice
        self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def for_person(self) -> str:
        """The message, then the advice on a line of its own (if there is any)."""
        message = self.message or type(self).__name__
        return f"{message}\n{self.advice}" if self.advice else message
