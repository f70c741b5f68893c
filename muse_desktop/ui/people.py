"""The household's first page: "Who is using MUsE?", one big tile per person and "Someone new"."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QPushButton, QToolButton, QVBoxLayout, QWidget

from muse_desktop.chat.store import Profile
from muse_desktop.chat.usertypes import Catalog
from muse_desktop.ui import widgets
from muse_desktop.ui.theme import PALETTES

TILE_PX = 150  # a tile's smallest side at 100 % (at least 140 px), growing with the text size
NEW_PERSON = "Someone new"
OWN_MODEL = "Make a model that answers the way I like"
OWN_MODEL_SHORT = "My own model…"  # under a tile, as narrow as the tile; its name for screen readers is the whole
INTRO = "Choose yourself. Each person has their own conversations, text size, voice and answers."
NOBODY = "Nobody is on this computer yet. Press “Someone new” to start."
LOCKED_INTRO = "Choose yourself. The caregiver has locked MUsE: people cannot be added or removed now."


def who_they_are(person: Profile, catalog: Catalog) -> str:
    """The person's user type in plain words ("Older adult"), or what to do when they have none yet."""
    if person.custom_user_type:
        return person.custom_user_type
    user_type = catalog.get(person.user_type_id)
    return user_type.display_name if user_type is not None else "Not chosen yet"


def initial_icon(text: str, colour: str, text_colour: str, size: int) -> QIcon:
    """A circle with a big letter (or "+"), drawn for the tile: the first thing an eye finds."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(colour))
    painter.drawEllipse(QRectF(1, 1, size - 2, size - 2))
    font = QFont()
    font.setPixelSize(int(size * 0.55))
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor(text_colour))
    painter.drawText(QRectF(0, 0, size, size), Qt.AlignCenter, text)
    painter.end()
    return QIcon(pixmap)


class PersonTile(QToolButton):
    """One big square button: the initial in a circle, the name, and who they are."""

    def __init__(self, title: str, subtitle: str, letter: str, person_id: int = 0):
        super().__init__()
        self.person_id = person_id
        self.letter = letter
        self.setObjectName("personTile")
        self.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
        self.setText(f"{title}\n{subtitle}" if subtitle else title)
        # What a screen reader says and voice control listens for: the words on the tile, in one line.
        self.setAccessibleName(f"{title}, {subtitle.lower()}" if subtitle else title)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setCheckable(False)

    def fit(self, zoom_percent: int, colour: str, text_colour: str) -> None:
        # Grows with the text, a little slower: at 200 % four tiles still fit a laptop screen's width.
        side = round(TILE_PX * (max(zoom_percent, 100) / 100) ** 0.6)
        icon = round(side * 0.42)
        self.setIcon(initial_icon(self.letter, colour, text_colour, icon))
        self.setIconSize(QSize(icon, icon))
        self.setMinimumSize(side, side)


class PeoplePage(QWidget):
    """The tiles; the window decides what a choice does (switch, add, remove)."""

    chosen = Signal(int)  # a person's id
    add_requested = Signal()
    remove_requested = Signal(int)
    own_model_requested = Signal(int)

    def __init__(self, catalog: Catalog):
        super().__init__()
        self.catalog = catalog
        self.tiles: dict[int, PersonTile] = {}
        self.remove_buttons: dict[int, QPushButton] = {}
        self.own_model_buttons: dict[int, QPushButton] = {}
        self.new_tile: PersonTile | None = None
        self._zoom, self._theme = 100, "normal"
        self._order: list[PersonTile] = []
        self._wanted: PersonTile | None = None
        layout = QVBoxLayout(self)
        layout.setSpacing(14)
        self.heading = widgets.label("Who is using MUsE?", "heading")
        layout.addWidget(self.heading)
        self.intro = widgets.label(INTRO, name="About this page")
        layout.addWidget(self.intro)
        self.holder = QWidget()
        self.flow = widgets.FlowLayout(self.holder, spacing=18)
        self.flow.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.holder)
        layout.addStretch(1)

    # -- what is shown -------------------------------------------------------------------------

    def show_people(self, people: list[Profile], current_id: int = 0, can_change: bool = True,
                    own_model: bool = False) -> None:
        """The tiles for ``people``; ``can_change`` False (locked): no "Someone new" and no "Remove…"."""
        while self.flow.count():
            item = self.flow.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()
                item.widget().deleteLater()
        self.tiles, self.remove_buttons, self.own_model_buttons, self.new_tile = {}, {}, {}, None
        for person in people:
            name = person.name
            tile = PersonTile(name, who_they_are(person, self.catalog), name[:1].upper(), person.id)
            tile.setToolTip(f"Use MUsE as {name}")
            tile.clicked.connect(lambda _=False, pid=person.id: self.chosen.emit(pid))
            column = self._column(tile)
            if own_model:
                make = widgets.button(OWN_MODEL_SHORT, f"{OWN_MODEL}, for {name}",
                                      lambda _=False, pid=person.id: self.own_model_requested.emit(pid))
                make.setAccessibleName(f"{OWN_MODEL} ({name})")
                make.setObjectName("compact")
                column.layout().addWidget(make)
                self.own_model_buttons[person.id] = make
            if can_change:
                remove = widgets.button("Remove…", f"Remove {name} and everything that is theirs",
                                        lambda _=False, pid=person.id: self.remove_requested.emit(pid))
                remove.setAccessibleName(f"Remove {name}…")
                remove.setObjectName("compact")
                column.layout().addWidget(remove)
                self.remove_buttons[person.id] = remove
            self.tiles[person.id] = tile
        if can_change:
            self.new_tile = PersonTile(NEW_PERSON, "", "+")
            self.new_tile.setToolTip("Add a person who uses this computer")
            self.new_tile.clicked.connect(self.add_requested)
            self._column(self.new_tile)
        self.intro.setText(NOBODY if not people else INTRO if can_change else LOCKED_INTRO)
        self._order = [*self.tiles.values(), *([self.new_tile] if self.new_tile else [])]
        self.fit(self._zoom, self._theme)
        self.focus_tile(current_id)

    def _column(self, tile: PersonTile) -> QWidget:
        column = QWidget()
        box = QVBoxLayout(column)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(6)
        box.addWidget(tile)
        tile.installEventFilter(self)
        self.flow.addWidget(column)
        column.show()
        return column

    def focus_tile(self, person_id: int = 0) -> None:
        """Focus the person last chosen (Enter goes on as them), else "Someone new", else the first tile."""
        target = self.tiles.get(person_id) or self.new_tile or next(iter(self.tiles.values()), None)
        self._wanted = target  # given when the page is shown, if it is not on screen yet
        if target is not None:
            target.setFocus(Qt.OtherFocusReason)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        wanted, self._wanted = self._wanted, None
        if wanted is not None and wanted.isVisible():
            wanted.setFocus(Qt.OtherFocusReason)

    def fit(self, zoom_percent: int, theme: str) -> None:
        """Tiles grow with the text size; the circle takes the theme's accent colour."""
        self._zoom, self._theme = zoom_percent, theme
        palette = PALETTES.get(theme, PALETTES["normal"])
        for tile in self._order:
            tile.fit(zoom_percent, palette["accent"], palette["accent_text"])
        self.holder.updateGeometry()

    def names(self) -> list[str]:
        """The tiles' accessible names, in order (what a screen reader meets)."""
        return [tile.accessibleName() for tile in self._order]

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        """Arrow keys move between the tiles, as on the user-type page; Tab goes through everything."""
        order = self._order
        if event.type() == QEvent.KeyPress and watched in order:
            step = {Qt.Key_Right: 1, Qt.Key_Down: 1, Qt.Key_Left: -1, Qt.Key_Up: -1}.get(event.key())
            if step is not None:
                order[(order.index(watched) + step) % len(order)].setFocus(Qt.TabFocusReason)
                return True
        return super().eventFilter(watched, event)


def tile_style(theme: str) -> str:
    """The tiles' look, added to the window's style sheet: a framed square, a thick ring when focused."""
    p = PALETTES.get(theme, PALETTES["normal"])
    return f"""
QToolButton#personTile {{ background: {p['field']}; color: {p['text']}; border: 2px solid {p['border']};
    border-radius: 14px; padding: 10px; font-weight: bold; }}
QToolButton#personTile:hover {{ border-color: {p['accent']}; }}
QToolButton#personTile:focus {{ border: 4px solid {p['focus']}; }}
"""
