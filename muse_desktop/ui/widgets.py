"""Small widget builders, so every control gets its accessible name the same way."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QLabel, QPushButton


def button(text: str, name: str, on_click: Callable | None = None, primary: bool = False) -> QPushButton:
    """A push button with an accessible name (and the accent colour when ``primary``)."""
    widget = QPushButton(text)
    widget.setAccessibleName(name)
    if primary:
        widget.setObjectName("primary")
    if on_click is not None:
        widget.clicked.connect(on_click)
    return widget


def label(text: str = "", style: str = "", name: str = "") -> QLabel:
    """A word-wrapping label; ``style`` is its object name in the stylesheet (heading, muted, error)."""
    widget = QLabel(text)
    widget.setWordWrap(True)
    if style:
        widget.setObjectName(style)
    if name:
        widget.setAccessibleName(name)
    return widget
