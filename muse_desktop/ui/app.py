"""The desktop window: say who you are (the user type), then talk with a model."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QAction, QActionGroup, QColor, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (
    QAbstractButton,
    QApplication,
    QButtonGroup,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QStackedWidget,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from muse_desktop import APP_NAME, __version__
from muse_desktop.household import lock
from muse_desktop.household import people as household
from muse_desktop.base.prompting import InstructionTemplate, TemplateError
from muse_desktop.household.settings import Settings, Theme, load_settings, save_settings
from muse_desktop.chat.store import Store, StoreError
from muse_desktop.ui.chat import ChatPage
from muse_desktop.ui.model_page import ModelPage
from muse_desktop.ui.people import OWN_MODEL, PeoplePage, tile_style
from muse_desktop.ui.theme import placeholder_colour, stylesheet
from muse_desktop.ui import widgets
from muse_desktop.chat.usertypes import Catalog, InvalidUserType, UserType, custom_user_type, load_catalog

# The four big tiles: the age groups most people pick.
TILES = (("child", "Child"), ("teenager", "Teenager"), ("adult", "Adult"), ("older-adult", "Older adult"))
UNLOCKED_MESSAGE = "Unlocked: the caregiver's settings are open again."
ZOOM_STEPS = (100, 125, 150, 175, 200, 250, 300)
SHORTCUTS = """Tab and Shift+Tab: go to the next or the previous control.
Enter or Space: press the button you are on.
Arrow keys: move between the big buttons (the people on "Who is using MUsE?"; Child, Teenager, Adult, Older adult).
Enter in the question box: send the question.
Ctrl+Space: speak your question instead of typing it.
Ctrl and +, Ctrl and −, Ctrl and 0: larger text, smaller text, normal size.
Ctrl+Shift+H: high contrast on or off.
Alt and the underlined letter: open a menu (View, Caregiver, Help).
F1: this list."""


def pin_dialog(parent: QWidget, title: str, label: str):
    """The dialog that asks for the caregiver's PIN; its words wrap, so it fits a laptop screen at 200 %."""
    from PySide6.QtWidgets import QInputDialog

    dialog = QInputDialog(parent)
    dialog.setWindowTitle(title)
    dialog.setLabelText(label)
    dialog.setTextEchoMode(QLineEdit.Password)
    dialog.setInputMode(QInputDialog.TextInput)
    for text in dialog.findChildren(QLabel):
        text.setWordWrap(True)
    return dialog


class UserTypePage(QWidget):
    """Big tiles for the age groups, a searchable list of everything, and a custom entry."""

    def __init__(self, catalog: Catalog, settings: Settings, on_change):
        super().__init__()
        self.catalog = catalog
        self.settings = settings
        self.on_change = on_change
        self.closed = lambda: False  # the window's lock check: while it says True nothing is chosen
        layout = QVBoxLayout(self)
        layout.setSpacing(14)

        heading = QHBoxLayout()
        self.heading = widgets.label("Who is using MUsE?", "heading")
        heading.addWidget(self.heading, 1)
        # The household: someone else on this computer, or a new person (hidden in simple mode).
        self.people_button = widgets.button("Change person", "Choose another person, or add someone new")
        self.people_button.setObjectName("compact")
        heading.addWidget(self.people_button, 0, Qt.AlignTop)
        layout.addLayout(heading)
        intro = QLabel("Answers are worded for the person you choose. You can change this at any time.")
        intro.setWordWrap(True)
        layout.addWidget(intro)

        tiles = QGridLayout()
        self.tile_group = QButtonGroup(self)
        self.tile_group.setExclusive(False)
        self.tiles: dict[str, QPushButton] = {}
        for index, (type_id, label) in enumerate(TILES):
            button = QPushButton(label)
            button.setCheckable(True)
            button.setMinimumHeight(88)
            user_type = catalog.get(type_id)
            # Named by its word, as seen (voice control says "Child"); the rest is the description.
            button.setAccessibleDescription(f"I am: {label}. {user_type.description}" if user_type else f"I am: {label}")
            if user_type:
                button.setToolTip(user_type.description)
            button.installEventFilter(self)
            button.clicked.connect(lambda _=False, t=type_id: self.choose(self.catalog.get(t)))
            self.tile_group.addButton(button)
            self.tiles[type_id] = button
            tiles.addWidget(button, index // 2, index % 2)
        layout.addLayout(tiles)
        self._tile_order = list(self.tiles.values())

        self.search = QLineEdit()
        search_label = widgets.field_label("Or find your job or situation:", self.search)  # its name, too
        layout.addWidget(search_label)
        self.search.setPlaceholderText("Type to search, for example nurse or farmer")
        self.search.setClearButtonEnabled(True)
        for clear in self.search.findChildren(QToolButton):  # the × in the box: named, or it is just "button"
            clear.setAccessibleName("Clear the search")
        self.search.textChanged.connect(self.refresh_list)
        layout.addWidget(self.search)

        self.results = QListWidget()
        self.results.setAccessibleName("Matching user types")
        self.results.setWordWrap(True)
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.results.setMinimumHeight(180)
        self.results.itemActivated.connect(self._item_chosen)
        self.results.itemClicked.connect(self._item_chosen)
        layout.addWidget(self.results, 1)
        self.search.returnPressed.connect(self._choose_first)

        self.custom = QLineEdit()
        custom_label = widgets.field_label("Not in the list? Type who you are:", self.custom)
        layout.addWidget(custom_label)
        row = QHBoxLayout()
        self.custom.setPlaceholderText("For example: Urban beekeeper")
        self.custom.returnPressed.connect(self._use_custom)
        row.addWidget(self.custom, 1)
        self.use_custom = widgets.button("Use this", "Use my own user type", self._use_custom)
        row.addWidget(self.use_custom)
        layout.addLayout(row)
        self.error = widgets.label(style="error", name="Problem")
        layout.addWidget(self.error)

        # The choice and the way on stay in view below the scrolling part
        # (MainWindow places this footer outside the scroll area).
        self.footer = QWidget()
        footer = QVBoxLayout(self.footer)
        self.chosen = widgets.label(name="Chosen user type")
        footer.addWidget(self.chosen)
        # The raw instruction is for the curious, not the first thing a child reads: behind a detail.
        self.preview_toggle = widgets.button("What MUsE is told", "Show or hide the instruction MUsE gets")
        self.preview_toggle.setObjectName("compact")
        self.preview_toggle.setCheckable(True)
        footer.addWidget(self.preview_toggle, 0, Qt.AlignLeft)
        self.preview = widgets.label(style="muted", name="What MUsE is told")
        self.preview.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.preview.setVisible(False)
        self.preview_toggle.toggled.connect(self.preview.setVisible)
        footer.addWidget(self.preview)
        self.start = widgets.button("Start talking", "Start talking", primary=True)
        self.start.setMinimumHeight(64)
        footer.addWidget(self.start)

        self.refresh_list("")
        self.show_current()

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        """The four tiles are one group: arrow keys move between them, Tab enters and leaves it."""
        if event.type() == QEvent.KeyPress and watched in self._tile_order:
            step = {Qt.Key_Right: 1, Qt.Key_Down: 1, Qt.Key_Left: -1, Qt.Key_Up: -1}.get(event.key())
            if step is not None:
                index = (self._tile_order.index(watched) + step) % len(self._tile_order)
                self._tile_order[index].setFocus(Qt.TabFocusReason)
                self._rove(self._tile_order[index])
                return True
        return super().eventFilter(watched, event)

    def _rove(self, entry: QPushButton) -> None:
        """Only one tile is in the Tab order (the chosen one, or the one last moved to)."""
        for tile in self._tile_order:
            tile.setFocusPolicy(Qt.StrongFocus if tile is entry else Qt.ClickFocus)

    def current(self) -> UserType | None:
        if self.settings.custom_user_type:
            try:
                return custom_user_type(self.settings.custom_user_type)
            except InvalidUserType:
                return None
        return self.catalog.get(self.settings.user_type_id)

    def refresh_list(self, text: str) -> None:
        self.results.clear()
        for user_type in self.catalog.search(text):
            item = QListWidgetItem(f"{user_type.display_name} — {user_type.description}")
            item.setData(Qt.UserRole, user_type.id)
            item.setToolTip(user_type.group)
            self.results.addItem(item)

    def _item_chosen(self, item: QListWidgetItem) -> None:
        self.choose(self.catalog.get(item.data(Qt.UserRole)))

    def _choose_first(self) -> None:
        if self.results.count():
            self._item_chosen(self.results.item(0))

    def _use_custom(self) -> None:
        try:
            user_type = custom_user_type(self.custom.text())
        except InvalidUserType as exc:
            self.error.setText(str(exc))
            return
        self.choose(user_type)

    def choose(self, user_type: UserType | None) -> None:
        if user_type is None or self.closed():
            return
        self.error.setText("")
        if user_type.is_custom:
            self.settings.custom_user_type = user_type.prompt_name
            self.settings.user_type_id = ""
        else:
            self.settings.custom_user_type = ""
            self.settings.user_type_id = user_type.id
        self.show_current()
        self.on_change()

    def show_current(self) -> None:
        user_type = self.current()
        for type_id, button in self.tiles.items():
            button.setChecked(user_type is not None and user_type.id == type_id)
        self._rove(self.tiles.get(user_type.id if user_type is not None else "", self._tile_order[0]))
        self.start.setEnabled(user_type is not None)
        if user_type is None:
            self.chosen.setText("Nobody chosen yet.")
            self.preview.setText("")
            return
        self.chosen.setText(f"Chosen: {user_type.display_name}")
        try:
            template = InstructionTemplate(self.settings.instruction_template or InstructionTemplate().text)
        except TemplateError:
            template = InstructionTemplate()
        self.preview.setText(f"MUsE is told: “{template.render(user_type.prompt_name)}”")


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None, catalog: Catalog | None = None, store: Store | None = None):
        super().__init__()
        self.settings = settings or load_settings().settings
        self.setWindowTitle(APP_NAME)
        self.store = store or Store()
        self.catalog = catalog or load_catalog()
        self._settle_person()
        self.page = UserTypePage(self.catalog, self.settings, self.save)
        self.page.closed = lambda: lock.is_locked(self.settings)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.page)
        self.chat = ChatPage(self.settings, self.store, self.save)
        self.model_page = ModelPage(self.settings, self.store)
        model_scroll = QScrollArea()
        model_scroll.setWidgetResizable(True)
        model_scroll.setWidget(self.model_page)
        picker = QWidget()
        picker_layout = QVBoxLayout(picker)
        picker_layout.setContentsMargins(0, 0, 0, 0)
        picker_layout.addWidget(scroll, 1)
        picker_layout.addWidget(self.page.footer)
        self._picker = picker
        self.pages = QStackedWidget()
        self.pages.addWidget(picker)
        self.pages.addWidget(model_scroll)
        self.pages.addWidget(self.chat)
        self._model_scroll = model_scroll
        # "Who is using MUsE?": the household's tiles, first when several people share the computer.
        self.people_page = PeoplePage(self.catalog)
        people_scroll = QScrollArea()
        people_scroll.setWidgetResizable(True)
        people_scroll.setWidget(self.people_page)
        self._people_scroll = people_scroll
        self.pages.addWidget(people_scroll)
        self.people_page.chosen.connect(self.choose_person)
        self.people_page.add_requested.connect(self.ask_new_person)
        self.people_page.remove_requested.connect(self.ask_remove_person)
        self.people_page.own_model_requested.connect(self._open_own_model)
        self.page.people_button.clicked.connect(self.show_people)
        self.chat.people_requested.connect(self.show_people)
        self.chat.person = self.person()
        from muse_desktop.ui.trainer import TrainerPage

        self.trainer = TrainerPage(self.settings, self.store)
        trainer_scroll = QScrollArea()
        trainer_scroll.setWidgetResizable(True)
        trainer_scroll.setWidget(self.trainer)
        self._trainer_scroll = trainer_scroll
        self.tabs = QTabWidget()
        self.tabs.setAccessibleName("Sections")
        self.tabs.addTab(self.pages, "Chat")
        # A bundle built without the training stack (MUsE Chat) has no Trainer tab at all;
        # a chat-only pip install shows the tab with what to install.
        if self.trainer.available or not getattr(sys, "frozen", False):
            self.tabs.addTab(trainer_scroll, "Trainer")
        # The mark sits above everything, so it is seen on every page and read by screen readers.
        self.lock_mark = QLabel(lock.LOCKED_MARK)
        self.lock_mark.setObjectName("lockMark")
        self.lock_mark.setAlignment(Qt.AlignCenter)
        central = QWidget()
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.lock_mark)
        central_layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        self.trainer.chat_requested.connect(self.chat_with)
        from muse_desktop.ui.compare import ComparePage

        self.compare = ComparePage(self.settings, self.store)
        compare_scroll = QScrollArea()
        compare_scroll.setWidgetResizable(True)
        compare_scroll.setWidget(self.compare)
        self._compare_scroll = compare_scroll
        self.tabs.addTab(compare_scroll, "Compare")
        # The tabs the lock closes, in their order; while locked they are taken out of the
        # window altogether, so no click, shortcut or screen reader can reach them.
        self._lockable_tabs = [(w, self.tabs.tabText(self.tabs.indexOf(w))) for w in (trainer_scroll, compare_scroll)
                               if self.tabs.indexOf(w) >= 0]
        self.tabs.currentChanged.connect(self._tab_changed)
        self.page.start.clicked.connect(self.show_chat)
        self.chat.back_requested.connect(self.show_picker)
        self.chat.model_page_requested.connect(self.show_model_page)
        self.model_page.back_requested.connect(self.back_from_model_page)
        self.model_page.model_chosen.connect(self.use_model)
        self.model_page.library_chosen.connect(self.chat_with)
        # A bound method (not a lambda), so Qt drops the connection when the window is gone.
        QGuiApplication.styleHints().colorSchemeChanged.connect(self._system_colours_changed)
        self._kiosk_dialog = None
        self._build_menu()
        self.apply_lock()
        if lock.is_locked(self.settings):
            self.open_locked_chat()
        self.chat.fit_zoom(self.settings.zoom_percent)
        self.apply_look()
        # Fits a 1280×720 or 1366×768 laptop screen with its task bar (820 px cut "Start talking" off).
        self.resize(900, 640)
        QApplication.instance().installEventFilter(self)
        if not lock.is_locked(self.settings) and self.page.start.isEnabled():
            self.page.start.setFocus()  # a returning person: Enter starts the conversation
        if not lock.is_locked(self.settings) and self._people_first():
            self.show_people()
        # The saved model opens while the first page shows (several seconds for a laptop-sized
        # model), with the returning person's instruction already in its cache.
        self.chat.preload(self.page.current())

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt's name)
        """Enter presses the focused button, as Space does (Qt's buttons only take Space)."""
        if (event.type() == QEvent.KeyPress and event.key() in (Qt.Key_Return, Qt.Key_Enter)
                and isinstance(watched, QAbstractButton) and watched.window() is self
                and watched.isEnabled() and watched.hasFocus() and not event.isAutoRepeat()):
            watched.click()  # at once: animateClick would press it 100 ms later, after the next key
            return True
        return super().eventFilter(watched, event)

    def _build_menu(self) -> None:
        view = self.menuBar().addMenu("&View")
        self.bigger = QAction("Larger text", self, shortcut=QKeySequence.ZoomIn)
        self.smaller = QAction("Smaller text", self, shortcut=QKeySequence.ZoomOut)
        self.reset = QAction("Normal text size", self, shortcut=QKeySequence("Ctrl+0"))
        self.bigger.triggered.connect(lambda: self.zoom(+1))
        self.smaller.triggered.connect(lambda: self.zoom(-1))
        self.reset.triggered.connect(lambda: self.zoom(0))
        for action in (self.bigger, self.smaller, self.reset):
            view.addAction(action)
        view.addSeparator()
        colours = view.addMenu("Colours")
        group = QActionGroup(self)
        self.theme_actions: dict[str, QAction] = {}
        for theme, text in ((Theme.AUTO, "Like the rest of the computer"), (Theme.NORMAL, "Light"),
                            (Theme.DARK, "Dark"), (Theme.HIGH_CONTRAST, "High contrast")):
            action = QAction(text, self, checkable=True)
            action.setChecked(self.settings.theme == theme)
            action.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            group.addAction(action)
            colours.addAction(action)
            self.theme_actions[theme] = action
        # A shortcut straight to high contrast and back, for people who cannot read the menu. It
        # lives on the window, not as a second "High contrast" menu item (two items, one name).
        self.contrast = QAction("High contrast on or off", self, checkable=True, shortcut=QKeySequence("Ctrl+Shift+H"))
        self.contrast.setChecked(self.settings.theme == Theme.HIGH_CONTRAST)
        self.contrast.toggled.connect(self.set_high_contrast)
        self.addAction(self.contrast)
        self.theme_actions[Theme.HIGH_CONTRAST].setShortcut(QKeySequence("Ctrl+Shift+H"))
        self.theme_actions[Theme.HIGH_CONTRAST].setShortcutContext(Qt.WidgetShortcut)  # shown; the window's acts
        self.chat.speech.build_menu(self.menuBar(), self)
        people_menu = self.menuBar().addMenu("&People")
        self.change_person_action = QAction("Change person…", self)
        self.change_person_action.triggered.connect(self.show_people)
        people_menu.addAction(self.change_person_action)
        self.own_model_action = QAction(f"{OWN_MODEL}…", self)
        self.own_model_action.triggered.connect(lambda: self._open_own_model(self.settings.person_id))
        self.own_model_action.setVisible(callable(getattr(self, "open_own_model", None)))
        people_menu.addAction(self.own_model_action)
        caregiver = self.menuBar().addMenu("&Caregiver")
        self.set_pin_action = QAction("Set or change the PIN…", self)
        self.lock_action = QAction("Lock now", self)
        self.unlock_action = QAction("Unlock…", self)
        self.simple_action = QAction("Simple mode", self, checkable=True)
        self.remove_pin_action = QAction("Remove the PIN…", self)
        self.kiosk_action = QAction("Kiosk mode…", self)
        self.kiosk_action.triggered.connect(self.open_kiosk)
        self.memory_action = QAction("Longer memory…", self, checkable=True)
        self.memory_action.setChecked(self.settings.long_context)
        self.memory_action.toggled.connect(self.set_long_memory)
        self.set_pin_action.triggered.connect(self.ask_new_pin)
        self.lock_action.triggered.connect(self.lock_now)
        self.unlock_action.triggered.connect(self.ask_unlock)
        self.simple_action.toggled.connect(self.set_simple_mode)
        self.remove_pin_action.triggered.connect(self.ask_remove_pin)
        for action in (self.set_pin_action, self.lock_action, self.unlock_action):
            caregiver.addAction(action)
        caregiver.addSeparator()
        caregiver.addAction(self.simple_action)
        caregiver.addAction(self.kiosk_action)
        caregiver.addAction(self.memory_action)
        caregiver.addSeparator()
        caregiver.addAction(self.remove_pin_action)
        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("About", self)
        about.triggered.connect(
            lambda: QMessageBox.about(self, APP_NAME, f"{APP_NAME} {__version__}\nEverything runs on this computer.")
        )
        keys = QAction("Keyboard shortcuts", self, shortcut=QKeySequence("F1"))
        keys.triggered.connect(lambda: QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS))
        help_menu.addAction(keys)
        help_menu.addAction(about)

    def zoom(self, step: int) -> None:
        current = self.settings.zoom_percent
        if step == 0:
            new = 100
        elif step > 0:
            new = next((z for z in ZOOM_STEPS if z > current), ZOOM_STEPS[-1])
        else:
            new = next((z for z in reversed(ZOOM_STEPS) if z < current), ZOOM_STEPS[0])
        self.settings.zoom_percent = new
        self.chat.fit_zoom(new)
        self.apply_look()
        self.save()

    def set_high_contrast(self, on: bool) -> None:
        if on != (self.settings.theme == Theme.HIGH_CONTRAST):
            self.set_theme(Theme.HIGH_CONTRAST if on else Theme.AUTO)

    def set_theme(self, theme: str) -> None:
        self.settings.theme = theme
        self.theme_actions[theme].setChecked(True)
        self.contrast.setChecked(theme == Theme.HIGH_CONTRAST)
        self.apply_look()
        self.save()

    def effective_theme(self) -> str:
        """The theme in use: AUTO becomes light or dark as the system says (light when it does not say)."""
        if self.settings.theme != Theme.AUTO:
            return self.settings.theme
        dark = QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark
        return Theme.DARK if dark else Theme.NORMAL

    def _system_colours_changed(self, _scheme) -> None:
        if self.settings.theme == Theme.AUTO:
            self.apply_look()

    def apply_look(self) -> None:
        self.setStyleSheet(stylesheet(self.effective_theme(), self.settings.zoom_percent)
                           + tile_style(self.effective_theme()))
        self.people_page.fit(self.settings.zoom_percent, self.effective_theme())
        palette = QApplication.palette()  # the style sheet has no word for the placeholder's colour
        palette.setColor(QPalette.PlaceholderText, QColor(placeholder_colour(self.effective_theme())))
        QApplication.setPalette(palette)

    def show_chat(self) -> None:
        """After "Start talking": the chat, or first the model step when there is no model yet."""
        user_type = self.page.current()
        if user_type is None:
            return
        if self._ensure_person() is not None and self.chat.person is None:
            self.chat.set_person(self.person())
        has_model = self.chat.engine is not None or (
            self.settings.model_path and Path(self.settings.model_path).is_file())
        if not has_model:
            self.show_model_page()
            return
        self.chat.set_user_type(user_type)
        self.pages.setCurrentWidget(self.chat)
        self.chat.input.setFocus()

    def show_picker(self) -> None:
        if not lock.is_locked(self.settings):
            self.pages.setCurrentIndex(0)

    def open_locked_chat(self) -> None:
        """Locked from the first window: the locked person's chat, never the picker."""
        user_type = self.page.current()
        self.pages.setCurrentWidget(self.chat)
        if user_type is None:
            self.chat.who.setText("Ask the caregiver to unlock MUsE and choose who is using it.")
            return
        self.chat.set_user_type(user_type)
        self.chat.input.setFocus()

    def _tab_changed(self, index: int) -> None:
        if lock.is_locked(self.settings) and index != 0:
            self.tabs.setCurrentIndex(0)
            return
        if self.tabs.widget(index) is self._compare_scroll:
            self.compare.refresh_models()  # the model open in the chat now is a choice

    def show_model_page(self) -> None:
        if lock.is_locked(self.settings):
            return
        self.model_page.refresh_library()
        self.pages.setCurrentWidget(self._model_scroll)
        self.model_page.get_button.setFocus()

    def back_from_model_page(self) -> None:
        self.pages.setCurrentWidget(self.chat if self.chat.engine is not None else self._picker)

    def use_model(self, path: str) -> None:
        """A model was chosen on the model page: open it in the chat."""
        if lock.is_locked(self.settings):
            return
        user_type = self.page.current()
        if user_type is not None:
            self.chat.set_user_type(user_type, open_saved_model=False)
        self.pages.setCurrentWidget(self.chat)
        self.chat.load_model(path)
        self.chat.input.setFocus()

    # -- the household: who is using MUsE ------------------------------------------------------

    def person(self):
        """The person using MUsE now (a store profile), or None when nobody is chosen."""
        if not self.settings.person_id:
            return None
        try:
            return self.store.profile(self.settings.person_id)
        except StoreError:
            return None

    def _settle_person(self) -> None:
        """At start: whoever used MUsE before people existed becomes person one; a removed person is nobody."""
        first = household.first_person(self.store, self.settings)
        if first is not None:
            self.settings.person_id = first.id
            self.save()
        elif self.settings.person_id and self.person() is None and not lock.is_locked(self.settings):
            household.leave(self.settings)  # locked, the lock's person stays: it fails closed

    def _people_first(self) -> bool:
        """The tiles come first when people share the computer (alone, MUsE opens as it always did)."""
        people = self.store.profiles()
        return len(people) >= 2 or (bool(people) and self.person() is None)

    def _ensure_person(self):
        """Someone owns the conversations: on a computer used alone, its first person is made now."""
        if self.person() is None and not self.store.profiles():
            first = household.first_person(self.store, self.settings)
            if first is not None:
                self.settings.person_id = first.id
                self.chat.person = first
                self.save()
        return self.person()

    def _remember(self) -> None:
        """Keep the person's text size, colours, voice and user type with them."""
        if self.settings.person_id:
            try:
                household.remember(self.store, self.settings.person_id, self.settings)
            except StoreError:
                pass  # removed a moment ago: nothing to keep

    def can_change_people(self) -> bool:
        """Adding and removing people: never while locked."""
        return not lock.is_locked(self.settings)

    def refresh_people(self) -> None:
        people = self.store.profiles()
        if lock.is_locked(self.settings):  # locked, who they are cannot be chosen: only people who have chosen
            people = [p for p in people if p.user_type_id or p.custom_user_type]
        hook = callable(getattr(self, "open_own_model", None))
        self.people_page.show_people(people, self.settings.person_id, can_change=self.can_change_people(),
                                     own_model=hook and not lock.is_locked(self.settings))

    def show_people(self) -> None:
        """ "Who is using MUsE?" (closed while the lock fixes the person)."""
        if not lock.can_switch_person(self.settings) or self.pages.indexOf(self._people_scroll) < 0:
            return
        if not lock.is_locked(self.settings):
            self._ensure_person()  # whoever used MUsE alone until now gets their own tile first
        self.tabs.setCurrentIndex(0)
        self.refresh_people()
        self.pages.setCurrentWidget(self._people_scroll)
        self.people_page.focus_tile(self.settings.person_id)

    def choose_person(self, person_id: int) -> None:
        """One click on a tile: the current person's settings stay with them, then ``person_id`` uses MUsE."""
        if not lock.can_switch_person(self.settings):
            return
        if self.chat.is_answering:
            QMessageBox.information(self, APP_NAME, "Please wait until MUsE has finished answering, then choose.")
            return
        try:
            chosen = self.store.profile(person_id)
        except StoreError:
            self.refresh_people()
            return
        if lock.is_locked(self.settings) and not (chosen.user_type_id or chosen.custom_user_type):
            return
        self._remember()
        household.switch_in_place(self.settings, chosen)
        lock.follow_person(self.settings)  # locked with switching allowed: the lock now fixes this person
        self.save()
        self.apply_person()
        if self.page.current() is None:  # someone new: first they say who they are
            self.tabs.setCurrentIndex(0)
            self.pages.setCurrentWidget(self._picker)
            self.page._tile_order[0].setFocus(Qt.OtherFocusReason)
            return
        self.show_chat()

    def apply_person(self) -> None:
        """The person now chosen: their look, voice, user type, conversations and add-on."""
        from muse_desktop.ui.speech_controls import SPEEDS

        person = self.person()
        for theme, action in self.theme_actions.items():
            action.setChecked(theme == self.settings.theme)
        self.contrast.blockSignals(True)
        self.contrast.setChecked(self.settings.theme == Theme.HIGH_CONTRAST)
        self.contrast.blockSignals(False)
        self.chat.fit_zoom(self.settings.zoom_percent)
        self.apply_look()
        speech = self.chat.speech
        for action, on in ((speech.auto_read_action, self.settings.read_aloud),
                           (speech.sends_action, self.settings.speech_sends)):
            action.blockSignals(True)
            action.setChecked(on)
            action.blockSignals(False)
        for action in speech.voice_actions:
            action.setChecked(action.data() == self.settings.voice_id)
        speeds = next((a.menu() for a in self.menuBar().findChildren(QAction) if a.menu() is not None
                       and a.text() == "Reading speed"), None)
        for action, (_label, value) in zip(speeds.actions() if speeds else [], SPEEDS, strict=False):
            action.setChecked(abs(self.settings.reading_speed - value) < 1e-6)
        self.page.heading.setText(f"Who is {person.name}?" if person is not None
                                  and person.name != household.FIRST_PERSON else "Who is using MUsE?")
        self.page.show_current()
        self.chat.set_person(person)
        user_type = self.page.current()
        if user_type is not None and self.chat.user_type is not None:
            self.chat.set_user_type(user_type, open_saved_model=False)

    def ask_new_person(self) -> None:
        """ "Someone new": their name, then the user-type page lets them say who they are."""
        if not self.can_change_people():
            return
        from PySide6.QtWidgets import QInputDialog

        dialog = QInputDialog(self)
        dialog.setWindowTitle("Someone new")
        dialog.setLabelText("What is the new person's name? A nickname is fine.")
        dialog.setInputMode(QInputDialog.TextInput)
        for text in dialog.findChildren(QLabel):
            text.setWordWrap(True)
        ok = dialog.exec() == QDialog.Accepted
        name = dialog.textValue()
        dialog.deleteLater()
        if ok:
            problem = self.add_person(name)
            if problem:
                QMessageBox.warning(self, APP_NAME, problem)

    def add_person(self, name: str) -> str | None:
        """Add a person and switch to them; returns a problem to show, or None."""
        if not self.can_change_people():
            return "Ask the caregiver to unlock MUsE to add someone."
        if self.chat.is_answering:
            return "Please wait until MUsE has finished answering."
        try:
            person = household.add_person(self.store, name, self.settings)
        except household.HouseholdError as exc:
            return str(exc)
        self.choose_person(person.id)
        return None

    def ask_remove_person(self, person_id: int) -> None:
        """Ask first, in plain words saying what goes with them; then remove."""
        if not self.can_change_people():
            return
        try:
            person = self.store.profile(person_id)
        except StoreError:
            self.refresh_people()
            return
        from muse_desktop.base.paths import user_dirs

        question = household.removal_question(self.store, person, user_dirs().data)
        answer = QMessageBox.question(self, "Remove a person", question, QMessageBox.Yes | QMessageBox.No,
                                      QMessageBox.No)
        if answer == QMessageBox.Yes:
            self.remove_person(person_id)

    def remove_person(self, person_id: int) -> bool:
        """Remove a person with everything that is theirs (the caller asked first).

        The person in use can be removed too, from this page: nobody is then using
        MUsE (their add-on leaves the model, the chat is emptied) until someone is
        chosen. Not while MUsE is answering them.
        """
        if not self.can_change_people() or (person_id == self.settings.person_id and self.chat.is_answering):
            return False
        from muse_desktop.base.paths import user_dirs

        try:
            person = self.store.profile(person_id)
            household.remove_person(self.store, person_id, user_dirs().data)
        except StoreError as exc:
            QMessageBox.warning(self, APP_NAME, str(exc))
            return False
        if person_id == self.settings.person_id:
            household.leave(self.settings)
            self.save()
            self.apply_person()
        self.refresh_people()
        widgets.announce(self.people_page.heading, f"{person.name} was removed.")
        return True

    def open_own_model(self, person_id: int):
        """ "Make a model that answers the way I like" for ``person_id``; then their blind check of it."""
        if lock.is_locked(self.settings):
            return None
        from muse_desktop.ui.own_model import OwnModelWindow

        engine = None if self.chat.is_answering else self.chat.engine  # writes the extra examples
        dialog = OwnModelWindow(self.store, self.settings, person_id, engine=engine, parent=self)
        dialog.setStyleSheet(self.styleSheet())
        dialog.check_requested.connect(self.open_own_check)
        dialog.choose_more_requested.connect(self._choose_more)
        dialog.show()
        self._own_model_window = dialog
        return dialog

    def open_own_check(self, person_id: int, adapter_path: str):
        """The person's blind check of their new add-on; a kept one is applied in the chat at once."""
        if lock.is_locked(self.settings):
            return None
        from muse_desktop.ui.own_check import OwnCheckWindow

        dialog = OwnCheckWindow(self, self.settings, self.store, person_id, adapter_path)
        dialog.setStyleSheet(self.styleSheet())
        dialog.decided.connect(lambda _kept, _path: self._own_add_on_settled(person_id))
        dialog.show()
        self._own_check_window = dialog
        return dialog

    def _own_add_on_settled(self, person_id: int) -> None:
        if person_id == self.settings.person_id:
            self.chat.set_person(self.person())  # their add-on (or the one they kept) answers from now on
        self.refresh_people()

    def _choose_more(self, person_id: int) -> None:
        """From the own-model window: back to the chat, with four answers to choose from."""
        window = getattr(self, "_own_model_window", None)
        if window is not None:
            window.close()
        if person_id != self.settings.person_id:
            self.choose_person(person_id)
        else:
            self.show_chat()
        if self.pages.currentWidget() is self.chat:
            self.chat.preference_toggle.setChecked(True)

    def _open_own_model(self, person_id: int) -> None:
        """The hook for "Make a model that answers the way I like" (a window another part provides)."""
        opener = getattr(self, "open_own_model", None)
        if callable(opener) and person_id and not lock.is_locked(self.settings):
            opener(person_id)

    # -- caregiver lock and simple mode ------------------------------------------------------

    def apply_lock(self) -> None:
        """Show or hide what the lock and simple mode close."""
        locked = lock.is_locked(self.settings)
        simple = self.settings.simple_mode
        # Hidden is not closed: what the lock closes is also disabled, so no input path
        # (keyboard, shortcut, screen reader's "press") can use it.
        switching = lock.can_switch_person(self.settings)
        self.chat.closed_controls = ((self.chat.change, self.chat.change_model) if locked else ()) + (
            () if switching else (self.chat.change_person,))
        for control in (self.chat.change, self.chat.change_model):
            control.setVisible(not locked and not simple)
            control.setEnabled(not locked and not self.chat.busy)
        self.chat.change_person.setVisible(switching and not simple)
        self.chat.change_person.setEnabled(switching)
        self.page.people_button.setVisible(not simple)
        # The people page leaves the window while the lock fixes the person (as the pages below do).
        present = self.pages.indexOf(self._people_scroll) >= 0
        if not switching and present:
            self.pages.removeWidget(self._people_scroll)
            self._people_scroll.setParent(None)
        elif switching and not present:
            self.pages.addWidget(self._people_scroll)
        self._people_scroll.setEnabled(switching)
        self.change_person_action.setEnabled(switching)
        self.own_model_action.setVisible(callable(getattr(self, "open_own_model", None)))
        self.own_model_action.setEnabled(not locked)
        # Closed pages leave the window altogether while locked: a hidden page's list items
        # are still "showing" to AT-SPI, and what is not in the tree cannot be pressed.
        if locked:
            self.pages.setCurrentWidget(self.chat)
        for position, page in enumerate((self._picker, self._model_scroll)):
            present = self.pages.indexOf(page) >= 0
            if locked and present:
                self.pages.removeWidget(page)
                page.setParent(None)
            elif not locked and not present:
                self.pages.insertWidget(position, page)
            page.setEnabled(not locked)
        for position, (widget, title) in enumerate(self._lockable_tabs, start=1):
            present = self.tabs.indexOf(widget) >= 0
            if locked and present:
                self.tabs.removeTab(self.tabs.indexOf(widget))
                widget.setParent(None)
            elif not locked and not present:
                self.tabs.insertTab(position, widget, title)
            widget.setEnabled(not locked)
            if not locked:
                self.tabs.setTabVisible(self.tabs.indexOf(widget), not simple)
        self.tabs.tabBar().setVisible(not simple and self.tabs.count() > 1)
        self.chat.set_simple(simple)
        if locked:
            self.tabs.setCurrentIndex(0)
            if self.pages.currentWidget() is not self.chat:
                self.pages.setCurrentWidget(self.chat)
        self.lock_mark.setVisible(locked)
        was_locked, self._was_locked = getattr(self, "_was_locked", None), locked
        if was_locked is not None and was_locked != locked:
            # A change a person must hear about: what can be used has just changed.
            # From the tabs, which are on screen either way (the mark has only just been shown).
            widgets.announce(self.tabs, lock.LOCKED_MARK if locked else UNLOCKED_MESSAGE)
        if locked and self._kiosk_dialog is not None and self._kiosk_dialog.isVisible():
            self._kiosk_dialog.close()  # the caregiver's settings close with the lock, also a dialog left open
        self.setWindowTitle(f"{APP_NAME} — {lock.LOCKED_MARK}" if locked else APP_NAME)
        has_pin = lock.has_pin(self.settings)
        self.set_pin_action.setEnabled(not locked)
        self.lock_action.setEnabled(has_pin and not locked)
        self.unlock_action.setEnabled(locked)
        self.remove_pin_action.setEnabled(has_pin and not locked)
        self.simple_action.blockSignals(True)
        self.simple_action.setChecked(simple)
        self.simple_action.blockSignals(False)
        self.simple_action.setEnabled(not locked)
        self.kiosk_action.setEnabled(not locked)
        self.memory_action.setEnabled(not locked)

    def set_pin(self, pin: str) -> str | None:
        """Set the PIN; returns a problem to show, or None."""
        if lock.is_locked(self.settings):
            return "Unlock first."
        try:
            lock.set_pin(self.settings, pin)
        except lock.PinError as exc:
            return str(exc)
        self.save()
        self.apply_lock()
        return None

    def lock_now(self) -> None:
        if not lock.has_pin(self.settings):
            return
        if self.page.current() is None or self._ensure_person() is None and self.store.profiles():
            # locked, the picker is closed: the chat needs someone to answer for
            QMessageBox.information(self, APP_NAME, "First choose who is using MUsE, then lock.")
            return
        lock.lock(self.settings)
        self.save()
        self.apply_lock()
        if self.chat.user_type is None or self.chat.user_type.prompt_name != self.page.current().prompt_name:
            self.open_locked_chat()

    def unlock(self, pin: str) -> lock.Attempt:
        attempt = lock.try_pin(self.settings, pin)
        if attempt.ok:
            self.settings.locked = False
            self.settings.locked_user = {}
        self.save()  # the failure count survives a restart
        self.apply_lock()
        return attempt

    def set_simple_mode(self, on: bool) -> None:
        if lock.is_locked(self.settings):
            self.apply_lock()
            return
        self.settings.simple_mode = on
        self.save()
        self.apply_lock()

    def _ask_pin(self, title: str, label: str) -> str | None:
        dialog = pin_dialog(self, title, label)
        ok = dialog.exec() == QDialog.Accepted
        pin = dialog.textValue()
        dialog.deleteLater()
        return pin if ok else None

    def ask_new_pin(self) -> None:
        if lock.is_locked(self.settings):
            return
        pin = self._ask_pin("Caregiver PIN", "New PIN: at least 4 digits, or a passphrase of 8 or more letters:")
        if pin is None:
            return
        if self._ask_pin("Caregiver PIN", "The same PIN again:") != pin:
            QMessageBox.warning(self, APP_NAME, "The two PINs were not the same; nothing was changed.")
            return
        problem = self.set_pin(pin)
        QMessageBox.information(self, APP_NAME, problem or "The PIN is set. Use “Lock now” to lock.")

    def ask_unlock(self) -> None:
        if not lock.is_locked(self.settings):
            return
        pin = self._ask_pin("Unlock", "Caregiver PIN:")
        if pin is not None:
            attempt = self.unlock(pin)
            if not attempt.ok:
                QMessageBox.warning(self, APP_NAME, attempt.message)

    def set_long_memory(self, on: bool, ask: bool = True) -> None:
        """Let a long-context model remember more, after saying what it costs (answer quality, memory)."""
        from muse_desktop.chat.engine import LONG_CONTEXT

        if lock.is_locked(self.settings) or on == self.settings.long_context:
            self._show_memory_choice()
            return
        if on and ask:
            engine = self.chat.engine
            more = ""
            if engine is not None:
                extra = engine.kv_cache_bytes(LONG_CONTEXT) - engine.kv_cache_bytes(engine.llm.n_ctx())
                if extra >= 0.05 * 2**30:
                    more = f" It also takes about {extra / 2**30:.1f} GB more of the computer's memory."
            answer = QMessageBox.question(
                self, "Longer memory",
                "MUsE can keep about twice as much of a conversation in mind. Its answers then become a "
                "little less exact: the model works in its long-text mode for every answer, also short ones."
                f"{more}\n\nTurn longer memory on?")
            if answer != QMessageBox.Yes:
                self._show_memory_choice()
                return
        self.settings.long_context = on
        self.settings.context_length = LONG_CONTEXT if on else Settings().context_length
        self.save()
        self._show_memory_choice()
        self.chat.reopen_model()

    def _show_memory_choice(self) -> None:
        self.memory_action.blockSignals(True)
        self.memory_action.setChecked(self.settings.long_context)
        self.memory_action.blockSignals(False)

    def open_kiosk(self):
        if lock.is_locked(self.settings):
            return None
        from muse_desktop.ui.kiosk import KioskDialog

        dialog = KioskDialog(self, self.settings, self.save)
        dialog.setStyleSheet(self.styleSheet())
        dialog.show()
        self._kiosk_dialog = dialog
        return dialog

    def ask_remove_pin(self) -> None:
        if lock.is_locked(self.settings):
            return
        answer = QMessageBox.question(self, APP_NAME, "Remove the caregiver PIN? Everything will be open.",
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer == QMessageBox.Yes:
            lock.remove_pin(self.settings)
            self.save()
            self.apply_lock()

    def chat_with(self, model_path: str, adapter_path: str = "") -> None:
        """From the Trainer: open the exported model (or base + adapter) in the chat."""
        if lock.is_locked(self.settings):
            return
        self.tabs.setCurrentIndex(0)
        user_type = self.page.current()
        if user_type is None:
            self.pages.setCurrentIndex(0)
            return
        self.chat.set_user_type(user_type, open_saved_model=False)
        self.pages.setCurrentWidget(self.chat)
        self.chat.load_model(model_path, [adapter_path] if adapter_path else [])

    def closeEvent(self, event) -> None:
        for page in (self._picker, self._model_scroll, self._people_scroll, *(w for w, _ in self._lockable_tabs)):
            if page.parent() is None:  # closed by the lock: Qt, not Python's collector, deletes it with us
                page.setParent(self)
                page.hide()
        self.compare.shutdown()
        self.trainer.shutdown()
        self.model_page.shutdown()
        self.chat.shutdown()
        super().closeEvent(event)

    def save(self) -> None:
        self._remember()
        try:
            save_settings(self.settings)
        except OSError as exc:
            QMessageBox.warning(self, APP_NAME, f"Your choice could not be saved ({exc}).")


def run_app(argv: Sequence[str] | None = None, screenshot: str | None = None) -> int:
    """Open the window and run until it is closed (with ``screenshot``: save it as PNG and quit)."""
    app = QApplication.instance() or QApplication(list(argv or sys.argv[:1]))
    app.setApplicationName(APP_NAME)
    loaded = load_settings()
    store = Store()
    window = MainWindow(loaded.settings, store=store)
    window.show()
    if screenshot:
        from PySide6.QtCore import QTimer

        def save() -> None:
            saved = window.grab().save(screenshot)
            print(f"Screenshot {'saved to' if saved else 'could not be saved to'} {screenshot}", flush=True)
            window.close()
            app.exit(0 if saved else 1)

        QTimer.singleShot(800, save)
        return app.exec()
    for problem in (loaded.problem, store.problem):
        if problem:
            QMessageBox.warning(window, APP_NAME, problem)
    return app.exec()
