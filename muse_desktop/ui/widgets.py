"""Small widget builders, so every control gets its accessible name the same way."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtGui import QAccessible, QAccessibleActionInterface, QAccessibleEvent
from PySide6.QtWidgets import (
    QAccessibleWidget,
    QComboBox,
    QLabel,
    QLayout,
    QPushButton,
    QWidget,
)


def button(text: str, detail: str = "", on_click: Callable | None = None, primary: bool = False) -> QPushButton:
    """A push button named by its visible words; ``detail`` is its accessible description (and tooltip).

    The accessible name is left to Qt, which takes it from the text, so what a screen
    reader says and what voice control listens for are the words on the button (WCAG 2.5.3).
    """
    widget = QPushButton(text)
    if detail and detail != text:
        widget.setAccessibleDescription(detail)
    if primary:
        widget.setObjectName("primary")
    if on_click is not None:
        widget.clicked.connect(on_click)
    return widget


def label(text: str = "", style: str = "", name: str = "") -> QLabel:
    """A word-wrapping label; ``style`` is its object name in the stylesheet (heading, muted, error).

    ``name`` says what the label is for and goes in the accessible description: a fixed
    accessible name would hide the label's changing text from screen readers.
    """
    widget = QLabel(text)
    widget.setWordWrap(True)
    if style:
        widget.setObjectName(style)
    if name:
        widget.setAccessibleDescription(name)
    return widget


def field_label(text: str, field: QWidget) -> QLabel:
    """The visible label of a field (a text box, a list, a choice box): the field's accessible name is
    exactly these words, and the label is its buddy (Alt+letter, and the "labelled by" relation)."""
    widget = QLabel(text)
    widget.setWordWrap(True)
    widget.setBuddy(field)
    field.setAccessibleName(text.rstrip(":").strip())
    return widget


class ChoiceBox(QComboBox):
    """A combo box that a screen reader names by its label, not by its value.

    On Linux Qt's own combo-box interface always gives the current value as the name
    ("muse-3" in place of "Recipe"), whatever ``setAccessibleName`` says. This class has
    its own interface (see :class:`_ChoiceAccessible`): the name is the accessible name
    (the visible label), the current value is the value and the description.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        _install_choice_factory()
        self.currentIndexChanged.connect(self._value_changed)

    def _value_changed(self, _index: int) -> None:
        if QAccessible.isActive():
            QAccessible.updateAccessibility(QAccessibleEvent(self, QAccessible.DescriptionChanged))


class _ChoiceAccessible(QAccessibleWidget):
    """Name = the label; value and description = the current choice; "show menu" opens the list."""

    def __init__(self, box: ChoiceBox):
        super().__init__(box, QAccessible.ComboBox)
        self._box = box

    def text(self, kind):  # Qt's name
        box = self._box
        if kind == QAccessible.Name:
            return box.accessibleName() or box.currentText()
        if kind == QAccessible.Value:
            return box.currentText()
        if kind == QAccessible.Description:
            extra = box.accessibleDescription()
            return f"{box.currentText()}. {extra}" if extra and extra != box.currentText() else box.currentText()
        return super().text(kind)

    def actionNames(self):  # noqa: N802 (Qt's name)
        return [QAccessibleActionInterface.showMenuAction(), *super().actionNames()]

    def doAction(self, name: str) -> None:  # noqa: N802 (Qt's name)
        if name == QAccessibleActionInterface.showMenuAction():
            self._box.showPopup()
            return
        super().doAction(name)


# Qt deletes an interface when its widget goes; until then Python must keep the wrapper
# alive (a collected wrapper would delete the C++ interface Qt still uses). A handful of
# choice boxes a window: kept for the process's life, the wrappers of gone ones are empty shells.
_CHOICE_INTERFACES: list = []
_factory_installed = False


def _choice_factory(class_name: str, obj):
    if class_name != "ChoiceBox" or not isinstance(obj, ChoiceBox):
        return None
    interface = _ChoiceAccessible(obj)
    _CHOICE_INTERFACES.append(interface)
    return interface


def _install_choice_factory() -> None:
    global _factory_installed
    if not _factory_installed:
        QAccessible.installFactory(_choice_factory)
        _factory_installed = True


class FlowLayout(QLayout):
    """Lays widgets out left to right and wraps to a new line when the width runs out.

    Button rows use it so that every label stays whole at 200 % zoom and on narrow
    windows, whatever the buttons say (translations, "Read aloud (not available)").
    """

    def __init__(self, parent=None, spacing: int = 8):
        super().__init__(parent)
        self._items: list = []
        self._spacing = spacing

    def addItem(self, item) -> None:  # noqa: N802 (Qt's name)
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int):  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int):  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self):  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.minimumSize()

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.minimumSize())
        margins = self.contentsMargins()
        return size + QSize(margins.left() + margins.right(), margins.top() + margins.bottom())

    def _arrange(self, rect: QRect, move: bool) -> int:
        margins = self.contentsMargins()
        area = rect.adjusted(margins.left(), margins.top(), -margins.right(), -margins.bottom())
        x, y, line_height = area.x(), area.y(), 0
        for item in self._items:
            if item.widget() is not None and not item.widget().isVisible() and item.widget().isHidden():
                continue
            hint = item.sizeHint()
            if x + hint.width() > area.right() + 1 and line_height > 0:
                x, y = area.x(), y + line_height + self._spacing
                line_height = 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), hint))
            x += hint.width() + self._spacing
            line_height = max(line_height, hint.height())
        return y + line_height - rect.y() + margins.bottom()


def announce(widget, message: str, assertive: bool = False) -> str:
    """Have screen readers say ``message`` once (politely unless ``assertive``); returns the way used.

    Qt ≥ 6.8 has an announcement event, which its AT-SPI bridge sends as the
    ``object:announcement`` signal Orca speaks. Older Qt gets the nearest working
    equivalent: the widget's description changes, which Orca reads for a focused widget.
    """
    from PySide6 import QtGui

    if not message:
        return ""
    event_type = getattr(QtGui, "QAccessibleAnnouncementEvent", None)
    if event_type is not None:
        event = event_type(widget, message)
        politeness = QtGui.QAccessible.AnnouncementPoliteness
        event.setPoliteness(politeness.Assertive if assertive else politeness.Polite)
        QtGui.QAccessible.updateAccessibility(event)
        return "announcement"
    widget.setAccessibleDescription(message)  # pragma: no cover (Qt < 6.8)
    return "description"
