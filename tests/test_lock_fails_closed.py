"""The caregiver lock fails closed: damaged, deleted or edited files never open it, and a restart keeps it."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from muse_desktop.household import lock
from muse_desktop.household.settings import Settings, load_settings, save_settings, settings_path


def locked_settings(pin: str = "2468") -> Settings:
    settings = Settings(user_type_id="child", zoom_percent=150)
    lock.set_pin(settings, pin)
    lock.lock(settings)
    save_settings(settings)
    return settings


def primary_lock_file():
    return lock.lock_paths()[0]


def test_the_lock_has_its_own_owner_only_file_and_settings_json_holds_no_pin():
    locked_settings()
    for path in lock.lock_paths():
        assert path.is_file()
        if os.name == "posix":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
        assert json.loads(path.read_text())["pin_hash"].startswith("scrypt$")
    text = settings_path().read_text()
    assert "scrypt" not in text and "caregiver_pin" not in text and "locked" not in text


def test_a_damaged_settings_file_never_touches_the_lock():
    locked_settings()
    data = json.loads(settings_path().read_text())
    data["zoom_percent"] = "big"
    settings_path().write_text(json.dumps(data))
    loaded = load_settings()
    assert loaded.problem and "damaged" in loaded.problem  # the appearance settings were set aside
    assert lock.is_locked(loaded.settings) and lock.try_pin(loaded.settings, "2468").ok


@pytest.mark.parametrize("damage", ["delete", "garbage", "edit-unlocked", "edit-no-pin"])
def test_deleting_or_editing_the_settings_file_keeps_the_lock(damage):
    locked_settings()
    path = settings_path()
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff{not json")
    else:
        data = json.loads(path.read_text())
        data.update({"locked": False} if damage == "edit-unlocked" else {"caregiver_pin": "", "locked": False})
        path.write_text(json.dumps(data))
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and loaded.user_type_id == "child"
    assert not lock.try_pin(loaded, "0000").ok and lock.try_pin(loaded, "2468").ok


def test_a_damaged_or_deleted_copy_of_the_lock_file_keeps_the_lock_and_the_pin():
    locked_settings()
    primary, backup = lock.lock_paths()
    primary.write_text("{ half a file")
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and lock.try_pin(loaded, "2468").ok
    primary.unlink()
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and lock.try_pin(loaded, "2468").ok
    save_settings(loaded)  # writing again repairs the missing copy
    assert primary.is_file()


def test_an_edited_lock_file_that_says_unlocked_is_still_locked():
    locked_settings()
    for path in lock.lock_paths():
        data = json.loads(path.read_text())
        data.update(locked=False, locked_user={"user_type_id": "child"})
        path.write_text(json.dumps(data))
    assert lock.is_locked(load_settings().settings)


def test_when_no_copy_of_the_pin_can_be_read_it_stays_locked_until_the_deliberate_reset(capsys):
    from muse_desktop.cli import main

    locked_settings()
    for path in lock.lock_paths():
        path.write_text(json.dumps({"schema": 1, "pin_hash": "scrypt$broken", "locked": False}))
    loaded = load_settings()
    assert lock.is_locked(loaded.settings) and "stays locked" in loaded.problem
    attempt = lock.try_pin(loaded.settings, "2468")
    assert not attempt.ok and "reset" in attempt.message
    save_settings(loaded.settings)  # saving never turns the damaged lock into "no PIN"
    assert lock.is_locked(load_settings().settings)
    assert main(["lock", "reset", "--confirm"]) == 0
    assert not lock.has_pin(load_settings().settings)


def test_every_guess_costs_a_quarter_second_and_passphrases_are_allowed():
    settings = Settings()
    lock.set_pin(settings, "correct horse battery staple")
    started = time.perf_counter()
    assert not lock.try_pin(settings, "correct horse battery stapler").ok
    assert time.perf_counter() - started >= lock.MIN_GUESS_S
    assert lock.try_pin(settings, "correct horse battery staple").ok
    lock.set_pin(settings, "12345678901234567890")
    assert lock.try_pin(settings, "12345678901234567890").ok
    with pytest.raises(lock.PinError):
        lock.set_pin(settings, "short")  # neither 4+ digits nor an 8+ character passphrase


def test_the_command_line_asks_for_the_pin_to_change_kiosk_mode(monkeypatch, tmp_path, capsys, museum_guard):
    from muse_desktop.cli import main

    settings = Settings(kiosk_mode=True)
    lock.set_pin(settings, "2468")
    lock.lock(settings)
    save_settings(settings)
    museum_guard.guard.save()
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "1111")
    assert main(["kiosk", "off"]) == 2
    assert "not right" in capsys.readouterr().err and load_settings().settings.kiosk_mode
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "2468")
    assert main(["kiosk", "off"]) == 0 and not load_settings().settings.kiosk_mode


def test_the_command_line_keeps_the_windows_f1_gate(tmp_path, capsys, museum_guard):
    """A guard too weak to switch on never replaces the live one."""
    from muse_desktop.cli import main
    from muse_desktop.household.scope import ScopeGuard, guard_path

    museum_guard.guard.save()
    before = guard_path().read_bytes()
    weak = tmp_path / "weak.jsonl"
    # Questions that look exactly like the off-topic set: the held-out F1 is poor.
    from muse_desktop.household.scope import out_of_scope_questions

    off = out_of_scope_questions()
    weak.write_text("".join(json.dumps({"user_type": "Child", "question": q, "answer": "x"}) + "\n"
                            for q in off[: len(off) // 2]))
    code = main(["kiosk", "train", str(weak), "--topic", "everything"])
    assert code == 2 and "not good enough" in capsys.readouterr().err
    assert guard_path().read_bytes() == before and ScopeGuard.load().topic == "ancient Egypt"


# -- the window after a restart ---------------------------------------------------------------


def damage_everything(step: str) -> None:
    """One of the ways a child (or an accident) might go at the files of a locked app."""
    primary, backup = lock.lock_paths()
    if step == "settings garbage":
        settings_path().write_text("{{{{")
    elif step == "settings edited":
        settings_path().write_text(json.dumps({"caregiver_pin": "", "locked": False, "user_type_id": "adult",
                                               "simple_mode": False}))
    elif step == "settings deleted":
        settings_path().unlink(missing_ok=True)
    elif step == "lock edited":
        data = json.loads(primary.read_text())
        data.update(locked=False, pin_hash="")
        primary.write_text(json.dumps(data))
    elif step == "lock deleted":
        primary.unlink()
    elif step == "lock damaged":
        backup.write_bytes(b"\x00" * 10)


def assert_locked_window(qtbot, win) -> None:
    from PySide6.QtWidgets import QAbstractButton

    assert win.pages.currentWidget() is win.chat and win.tabs.currentIndex() == 0  # not the picker
    assert win.lock_mark.isVisible() and win.lock_mark.text() == "Locked by the caregiver"
    assert [win.tabs.tabText(i) for i in range(win.tabs.count())] == ["Chat"]
    assert not win.page.isEnabled() or not win._picker.isEnabled()
    assert not win.chat.change.isEnabled() and not win.chat.change_model.isEnabled()
    assert win.chat.user_type is not None and win.chat.user_type.id == "child"
    # Keyboard: the shortcuts that switch tabs and the menus' items open nothing.
    for key, modifier in ((Qt.Key_Tab, Qt.ControlModifier), (Qt.Key_PageDown, Qt.ControlModifier),
                          (Qt.Key_PageUp, Qt.ControlModifier)):
        QTest.keyClick(win.tabs, key, modifier)
        assert win.tabs.currentIndex() == 0
    for action in (win.set_pin_action, win.lock_action, win.remove_pin_action, win.simple_action,
                   win.kiosk_action, win.memory_action):
        assert not action.isEnabled()
        action.trigger()  # even a disabled action's trigger (a script, an AT) must not open anything
    win.set_long_memory(True)
    assert not win.settings.long_context and not win.memory_action.isChecked()
    win.ask_new_pin()
    win.ask_remove_pin()
    assert win.open_kiosk() is None and lock.is_locked(win.settings)
    # Direct routes that a button or a screen reader's "press" would take.
    win.chat.back_requested.emit()
    win.chat.model_page_requested.emit()
    win.page.choose(win.page.catalog.get("adult"))
    win.chat_with("/nowhere.gguf")
    win.tabs.setCurrentIndex(1)
    assert win.pages.currentWidget() is win.chat and win.settings.user_type_id == "child"
    assert win.tabs.currentIndex() == 0
    # Nothing the lock closes is enabled anywhere in the window (hidden is not closed).
    for page in (win._trainer_scroll, win._compare_scroll, win._model_scroll, win._picker):
        assert not page.isEnabled()
        assert not any(b.isEnabled() and b.isVisibleTo(page) and page.isEnabled()
                       for b in page.findChildren(QAbstractButton))


def test_a_locked_app_stays_locked_through_damaged_deleted_and_edited_files_and_restarts(qtbot):
    from muse_desktop.ui.app import MainWindow

    first = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(first)
    first.show()
    first.chat.set_user_type(first.page.current())
    first.pages.setCurrentWidget(first.chat)
    assert first.set_pin("2468") is None
    first.lock_now()
    assert_locked_window(qtbot, first)
    first.close()
    steps = ["settings garbage", "settings edited", "settings deleted", "lock edited", "lock deleted",
             "lock damaged"]
    for step in steps:
        damage_everything(step)
        restarted = MainWindow(load_settings().settings)  # a new window instance: a restart
        qtbot.addWidget(restarted)
        restarted.show()
        qtbot.waitExposed(restarted)
        assert_locked_window(qtbot, restarted)
        restarted.close()
    # The caregiver still gets in with the PIN (the backup copy kept it), and everything opens again.
    final = MainWindow(load_settings().settings)
    qtbot.addWidget(final)
    final.show()
    assert final.unlock("2468").ok
    assert [final.tabs.tabText(i) for i in range(final.tabs.count())] == ["Chat", "Trainer", "Compare"]
    assert final.chat.change.isEnabled() and not final.lock_mark.isVisible()
    final.close()


def test_settings_from_before_the_lock_file_move_the_lock_over_and_stay_locked():
    """A settings.json written by an older version (PIN hash and locked state inside) keeps its lock."""
    settings = Settings()
    lock.set_pin(settings, "2468")
    old = {"schema_version": 1, "user_type_id": "child", "caregiver_pin": settings.caregiver_pin, "locked": True,
           "pin_failures": 1, "kiosk_mode": False}
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text(json.dumps(old))
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and loaded.pin_failures == 1
    assert all(path.is_file() for path in lock.lock_paths())
    save_settings(loaded)
    assert "caregiver_pin" not in settings_path().read_text()
    settings_path().unlink()  # the old copy is gone: the lock file alone keeps it
    assert lock.is_locked(load_settings().settings) and lock.try_pin(load_settings().settings, "2468").ok


def test_locking_closes_a_kiosk_dialog_left_open(qtbot):
    from muse_desktop.ui.app import MainWindow

    win = MainWindow(Settings(user_type_id="child"))
    qtbot.addWidget(win)
    win.show()
    dialog = win.open_kiosk()
    assert dialog.isVisible()
    win.set_pin("2468")
    win.lock_now()
    assert not dialog.isVisible() and not win.kiosk_action.isEnabled()
    win.close()


def test_locking_from_the_picker_opens_the_chosen_persons_chat_and_needs_a_choice(qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    from muse_desktop.ui.app import MainWindow

    told = []
    monkeypatch.setattr(QMessageBox, "information", lambda _parent, _title, text, *a: told.append(text))
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    win.set_pin("2468")
    win.lock_now()  # nobody chosen yet
    assert not lock.is_locked(win.settings) and told == ["First choose who is using MUsE, then lock."]
    win.page.choose(win.page.catalog.get("child"))
    win.lock_now()
    assert lock.is_locked(win.settings) and win.pages.currentWidget() is win.chat
    assert win.chat.user_type.id == "child" and win.chat.who.text() == "Answers for: Child"
    win.close()


def test_an_answer_while_locked_does_not_reopen_the_model_button(qtbot, tiny_gguf):
    from helpers import window_with_model

    from muse_desktop.models.demo_model import Variant

    win = window_with_model(qtbot, Settings(user_type_id="child"), tiny_gguf[Variant.MINI_4K])
    win.set_pin("2468")
    win.lock_now()
    win.chat.input.setText("Hello?")
    with qtbot.waitSignal(win.chat.answer_done, timeout=30000):
        win.chat.send()
    qtbot.waitUntil(lambda: win.chat.worker is None)
    assert win.chat.send_button.isEnabled()  # the end of the answer reopened what it closed...
    assert not win.chat.change_model.isEnabled() and not win.chat.change.isEnabled()  # ...but not the lock's
    assert win.unlock("2468").ok and win.chat.change_model.isEnabled()
    win.close()


# --- the database's witness: every copy of the lock file gone or emptied ---------------------------


def _kiosk_locked_settings():
    settings = Settings(user_type_id="child", kiosk_mode=True)
    lock.set_pin(settings, "2468")
    lock.lock(settings)
    save_settings(settings)
    return settings


@pytest.mark.parametrize("damage", ["delete-all", "empty-pin-all", "garbage-all"])
def test_losing_every_lock_file_keeps_the_lock_and_the_kiosk(damage):
    """On Windows and macOS both copies are one file: deleting it must not open the app."""
    from muse_desktop.household.scope import guard_path

    _kiosk_locked_settings()
    assert not guard_path().exists()  # the worst case: no guard either
    for path in lock.lock_paths():
        if damage == "delete-all":
            path.unlink()
        elif damage == "empty-pin-all":
            data = json.loads(path.read_text())
            data.update(pin_hash="", locked=False, kiosk_mode=False)
            path.write_text(json.dumps(data))
        else:
            path.write_text("garbage")
    loaded = load_settings().settings
    assert lock.is_locked(loaded) and loaded.kiosk_mode
    assert not lock.try_pin(loaded, "2468").ok  # no readable PIN: only the deliberate reset opens it
    lock.reset_lock()
    assert not lock.is_locked(load_settings().settings)


def test_a_fresh_install_without_a_pin_writes_no_witness_and_stays_open():
    from muse_desktop.base.paths import user_dirs
    from muse_desktop.chat.store import DB_FILE

    save_settings(Settings(user_type_id="child"))
    assert not (user_dirs().data / DB_FILE).exists()
    assert not lock.is_locked(load_settings().settings)
